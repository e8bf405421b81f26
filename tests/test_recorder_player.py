"""safefql_player and safefql_recorder as real subprocesses on the private ROS domain.

A bag written with rosbags (200 odometry and 200 twist messages at 200 Hz, message i
carrying x = i) is played with the command topic excluded and recorded again: the recorded
bytes must equal the played ones, in order, with the original timing divided by `rate`.
The recorder must also close a readable, self-describing bag on SIGINT and SIGTERM, keep the
publishers' QoS (a latched value published before it started is recorded), and both nodes
must refuse bad input with a message that names the problem.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402
from rosbags.interfaces import QosDurability, QosReliability  # noqa: E402
from std_msgs.msg import Float64, String  # noqa: E402

from safefql_core.bags import DEFAULT_TYPESTORE, SIM_EPOCH_NS, default_message, typestore, write_bag  # noqa: E402
from safefql_ros.qos import LATCHED_QOS  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.usefixtures("ros")]

ODOM, CMD = "/boat/odom", "/boat/cmd_vel"
N, PERIOD_NS = 200, 5_000_000  # 200 messages per topic at 200 Hz: a 0.995 s span
STORE = typestore(DEFAULT_TYPESTORE)


@pytest.fixture
def probe():
    node = rclpy.create_node("recorder_player_probe")
    yield node
    node.destroy_node()


def _write(path: Path, topics: dict[str, str], fill: Callable[[str, object, int], None]) -> Path:
    """N messages per topic at 200 Hz; `fill(topic, msg, i)` sets message i's content."""
    msgs = {topic: default_message(STORE, msgtype) for topic, msgtype in topics.items()}

    def messages():
        for i in range(N):
            for topic, msg in msgs.items():
                fill(topic, msg, i)
                yield topic, SIM_EPOCH_NS + i * PERIOD_NS, msg

    write_bag(path, topics, messages(), STORE)
    return path


@pytest.fixture(scope="module")
def source_bag(tmp_path_factory) -> Path:
    def fill(topic: str, msg, i: int) -> None:
        if topic == ODOM:
            msg.pose.pose.position.x = float(i)
        else:
            msg.linear.x = float(i)

    return _write(tmp_path_factory.mktemp("src") / "bag", {ODOM: "nav_msgs/msg/Odometry",
                                                            CMD: "geometry_msgs/msg/Twist"}, fill)


def start(node: str, *params: str) -> subprocess.Popen:
    args = [arg for p in params for arg in ("-p", p)]
    return subprocess.Popen([sys.executable, "-m", f"safefql_ros.{node}", "--ros-args", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop(proc: subprocess.Popen, signum: int) -> str:
    """Signal the process and return its output once it exited (killed after 15 s)."""
    if proc.poll() is None:
        proc.send_signal(signum)
    try:
        return proc.communicate(timeout=15)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[0] + "\n(killed: did not exit on the signal)"


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def read(path: Path) -> dict[str, list[tuple[int, bytes]]]:
    """topic -> [(bag time, raw bytes)] in bag order."""
    messages: dict[str, list[tuple[int, bytes]]] = {}
    with AnyReader([path]) as reader:
        for connection, stamp, data in reader.messages():
            messages.setdefault(connection.topic, []).append((stamp, bytes(data)))
    return messages


@pytest.mark.parametrize("rate, clock", [(1.0, False), (2.0, True)])
def test_play_then_record_round_trip(source_bag, tmp_path, probe, rate, clock):
    out = tmp_path / "recorded"
    recorder = start("recorder", f"output:={out}", f"topics:=[{ODOM},{CMD},/clock]")
    try:
        # No delay and no wait here: the player itself waits until its played topic has a
        # subscriber (the recorder's, created once it sees the player's publisher).
        player = start("player", f"bag:={source_bag}", f"exclude_topics:=[{CMD}]", f"rate:={rate}",
                       f"publish_clock:={str(clock).lower()}")
        played = player.communicate(timeout=30)[0]
        assert player.returncode == 0, played
        assert f"played {N} messages" in played
    finally:
        output = stop(recorder, signal.SIGINT)
    assert recorder.returncode == 0, output
    source, recorded = read(source_bag), read(out)
    assert CMD not in recorded, "the excluded topic was played"
    assert [d for _, d in recorded[ODOM]] == [d for _, d in source[ODOM]], "messages lost, reordered or changed"
    assert STORE.deserialize_cdr(recorded[ODOM][-1][1], "nav_msgs/msg/Odometry").pose.pose.position.x == N - 1
    span = (recorded[ODOM][-1][0] - recorded[ODOM][0][0]) / ((N - 1) * PERIOD_NS)
    assert 0.7 / rate <= span <= 1.3 / rate, f"recorded span is {span:.2f} of the original, expected 1/{rate:g}"
    assert f"{ODOM}: {N}" in output and f"never found a publisher on ['{CMD}'" in output
    if not clock:
        assert "/clock" not in recorded
        return
    times = [(m.clock.sec * 10**9 + m.clock.nanosec)
             for m in (STORE.deserialize_cdr(d, "rosgraph_msgs/msg/Clock") for _, d in recorded["/clock"])]
    first, last = source[ODOM][0][0], source[ODOM][-1][0]
    assert len(times) > N / 2 and all(a < b for a, b in zip(times, times[1:])), "/clock not increasing"
    assert first <= times[0] and times[-1] == last, "/clock is not the bag time"


@pytest.mark.parametrize("signum, storage", [(signal.SIGINT, "sqlite3"), (signal.SIGTERM, "mcap")])
def test_recorder_closes_bag_on_signal(tmp_path, probe, signum, storage):
    """A latched value published before the recorder starts is recorded (transient local), the
    best-effort stream is recorded best-effort, and the bag reads back with its own definitions."""
    latched = probe.create_publisher(String, "/rp/latched", LATCHED_QOS)
    latched.publish(String(data="hello"))
    data = probe.create_publisher(Float64, "/rp/data", qos_profile_sensor_data)
    out = tmp_path / "bag"
    recorder = start("recorder", f"output:={out}", "topics:=[/rp/latched,/rp/data]", f"storage:={storage}")
    try:
        wait_for(lambda: recorder.poll() is not None or
                 (data.get_subscription_count() > 0 and latched.get_subscription_count() > 0), 20.0,
                 "the recorder's subscriptions")
        for i in range(25):  # paced like a sensor; no wait at the end: the recorder writes
            data.publish(Float64(data=float(i)))   # what was delivered before the signal
            time.sleep(0.02)
    finally:
        output = stop(recorder, signum)
    assert recorder.returncode == 0, output
    assert f"wrote {out}" in output
    assert any(out.glob("*.db3" if storage == "sqlite3" else "*.mcap"))
    values: dict[str, list] = {}
    with AnyReader([out]) as reader:  # no default typestore: the definitions come from the bag
        for connection, _, raw in reader.messages():
            values.setdefault(connection.topic, []).append(reader.deserialize(raw, connection.msgtype).data)
        qos = {c.topic: c.ext.offered_qos_profiles[0] for c in reader.connections}
    assert values["/rp/latched"] == ["hello"]
    assert len(values["/rp/data"]) >= 15 and values["/rp/data"] == sorted(values["/rp/data"])
    assert qos["/rp/data"].reliability == QosReliability.BEST_EFFORT
    assert qos["/rp/latched"].durability == QosDurability.TRANSIENT_LOCAL


def test_player_without_subscribers_plays_after_its_timeout(source_bag):
    """Nobody listens: the player waits `subscriber_timeout`, names the topics (played or
    not), then plays."""
    player = start("player", f"bag:={source_bag}", f"topics:=[{ODOM}]", "subscriber_timeout:=0.5", "rate:=20.0",
                   f"wait_for:=[{ODOM},/not/played]")
    output = player.communicate(timeout=60)[0]
    assert player.returncode == 0, output
    assert f"no subscriber on ['{ODOM}', '/not/played'] after 0.5 s; playing anyway" in output
    assert f"played {N} messages" in output


def test_bad_input_is_refused_clearly(source_bag, tmp_path):
    tf_bag = _write(tmp_path / "tf", {"/tf": "tf2_msgs/msg/TFMessage"}, lambda *_: None)
    cases = {  # expected text in the output -> process; all started at once, each must exit 1
        "is not a rosbag2 directory": start("player", f"bag:={tmp_path / 'missing'}"),
        f"topic(s) ['/nope'] not in {source_bag}; the bag has: {CMD}": start(
            "player", f"bag:={source_bag}", "topics:=[/nope]"),
        "message type tf2_msgs/msg/TFMessage is not importable": start("player", f"bag:={tf_bag}"),
        "Parameter rate out of range": start("player", f"bag:={source_bag}", "rate:=0.0"),
        f"output {tmp_path} already exists": start("recorder", f"output:={tmp_path}", f"topics:=[{ODOM}]"),
        "parameter 'topics' is not set": start("recorder", f"output:={tmp_path / 'new'}"),
    }
    for text, proc in cases.items():
        output = proc.communicate(timeout=30)[0]
        assert proc.returncode == 1, output
        assert "cannot start" in output and text in output, output
    assert not (tmp_path / "new").exists()


def test_a_stop_writes_what_was_already_delivered(tmp_path, probe):
    """Messages queued at the recorder when it is stopped (its executor never ran here) are
    written before the bag closes: the last seconds before Ctrl-C are the ones a user wants."""
    from rclpy.executors import SingleThreadedExecutor

    from safefql_ros.recorder import Recorder
    pub = probe.create_publisher(Float64, "/rp/queued", 50)   # first: the recorder subscribes on discovery
    wait_for(lambda: probe.get_publishers_info_by_topic("/rp/queued"), 20.0, "the publisher in the graph")
    recorder = Recorder(parameter_overrides=[rclpy.parameter.Parameter("output", value=str(tmp_path / "bag")),
                                             rclpy.parameter.Parameter("topics", value=["/rp/queued"])])
    try:
        got: list[float] = []
        probe.create_subscription(Float64, "/rp/queued", lambda m: got.append(m.data), 50)
        wait_for(lambda: pub.get_subscription_count() == 2, 20.0, "both subscriptions")
        for i in range(30):
            pub.publish(Float64(data=float(i)))
        executor = SingleThreadedExecutor()
        executor.add_node(probe)   # only the probe spins: the recorder's 30 stay queued
        wait_for(lambda: executor.spin_once(timeout_sec=0.05) or len(got) == 30, 20.0, "delivery")
        assert recorder.counts["/rp/queued"] == 0
    finally:
        recorder.close()
        recorder.destroy_node()
    assert recorder.counts["/rp/queued"] == 30
    with AnyReader([tmp_path / "bag"]) as reader:
        assert [reader.deserialize(raw, c.msgtype).data for c, _, raw in reader.messages()] == got

"""The controller, boat_sim and episode_monitor nodes with real rclpy pub/sub (ROS_CONVENTIONS.md,
"Control node").

In-process nodes share one single-threaded executor with a probe node that feeds states
and records what the controller publishes; the SIGTERM and bad-bundle checks run the
controller as a subprocess. A non-zero stop action ([0.25, -0.5]) makes the stop command
recognisable among policy commands.
"""
from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time as TimeMsg  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import Point, TwistStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.duration import Duration  # noqa: E402
from rclpy.exceptions import InvalidParameterValueException  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from rclpy.time import Time  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from std_msgs.msg import Float64, String, UInt32  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from safefql_core.bundle import load_bundle  # noqa: E402
from safefql_core.envs import boat  # noqa: E402
from safefql_core.runtime import Decision, Mode  # noqa: E402
from safefql_core.tasks import TaskSpec, TaskSpecError  # noqa: E402
from safefql_ros.boat_sim import BoatSim  # noqa: E402
from safefql_ros.controller import COMMAND_QOS, LATCHED_QOS, Controller  # noqa: E402
from safefql_ros.episode_monitor import EpisodeMonitor  # noqa: E402
from safefql_ros.lifecycle_manager import LifecycleError, bring_up  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.usefixtures("ros")]

STOP = [0.25, -0.5]
DIAG_KEYS = {"q_safe", "threshold", "margin", "state_age_ms", "inference_ms", "mode", "interventions",
             "cpu_percent"}
SAFE_STATE = (-2.0, 0.0)


class Probe(Node):
    """Feeds odometry at 50 Hz (while `feeding`) and records commands, modes and diagnostics."""

    def __init__(self) -> None:
        super().__init__("probe")
        self.state = SAFE_STATE
        self.feeding = True
        self.frame_id = "odom"  # the boat spec's state frame (REP 105)
        self.stamp: Callable[[], TimeMsg] = lambda: self.get_clock().now().to_msg()
        self.last_fed = 0.0
        self.commands: list[tuple[float, float, float]] = []  # (monotonic time, linear.x, linear.y)
        self.diagnostics: list[tuple[float, DiagnosticStatus]] = []
        self.modes: list[str] = []
        self.odom: list[tuple[float, float]] = []
        self.episodes: list[int] = []
        self.odom_pub = self.create_publisher(Odometry, "/boat/odom", qos_profile_sensor_data)
        self.create_subscription(TwistStamped, "/boat/cmd_vel", self._on_cmd, COMMAND_QOS)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.create_subscription(String, "/safefql_controller/mode", lambda m: self.modes.append(m.data),
                                 LATCHED_QOS)
        self.create_timer(0.02, self._feed)

    def listen_to_sim(self) -> None:
        """Closed loop: stop feeding, record the simulator's odometry and episodes instead."""
        self.feeding = False
        self.create_subscription(Odometry, "/boat/odom", lambda m: self.odom.append(
            (m.pose.pose.position.x, m.pose.pose.position.y)), qos_profile_sensor_data)
        self.create_subscription(UInt32, "/boat/episode", lambda m: self.episodes.append(m.data), LATCHED_QOS)

    def _feed(self) -> None:
        if not self.feeding:
            return
        msg = Odometry()
        msg.header.stamp, msg.header.frame_id = self.stamp(), self.frame_id
        msg.pose.pose.position.x, msg.pose.pose.position.y = self.state
        self.odom_pub.publish(msg)
        self.last_fed = time.monotonic()

    def _on_cmd(self, msg: TwistStamped) -> None:
        self.commands.append((time.monotonic(), msg.twist.linear.x, msg.twist.linear.y))

    def _on_diag(self, msg: DiagnosticArray) -> None:
        self.diagnostics += [(time.monotonic(), s) for s in msg.status if s.name.startswith("safefql_controller")]

    def policy_commands(self) -> list[tuple[float, float, float]]:
        return [c for c in self.commands if not is_stop(c)]


def is_stop(command: tuple[float, float, float]) -> bool:
    return math.isclose(command[1], STOP[0], abs_tol=1e-9) and math.isclose(command[2], STOP[1], abs_tol=1e-9)


def spin_until(executor: SingleThreadedExecutor, predicate: Callable[[], bool], timeout: float) -> bool:
    """Spin until `predicate` holds or `timeout` seconds pass; returns the predicate's value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=0.01)
    return predicate()


def controller(bundle, activate: bool = True, **params) -> Controller:
    """A configured controller, active unless `activate` is False; its stop action STOP (not the
    bundle's zeros, to tell it apart from a policy command) is an explicit override."""
    params = {"bundle": str(bundle), "stop_action": STOP, "override_decision": True, "control_rate_hz": 50.0,
              "state_timeout": 0.2, **params}
    node = Controller(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    if activate:
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    return node


@pytest.fixture
def loop():
    """An executor with a fresh probe; nodes added with `add` are destroyed afterwards."""
    executor = SingleThreadedExecutor()
    nodes: list[Node] = []

    def add(node: Node) -> Node:
        executor.add_node(node)
        nodes.append(node)
        return node

    probe = add(Probe())
    yield executor, probe, add
    for node in nodes:
        executor.remove_node(node)
        node.destroy_node()


def errors_with(probe: Probe, text: str) -> list[DiagnosticStatus]:
    return [s for _, s in probe.diagnostics if s.level == DiagnosticStatus.ERROR and text in s.message]


def test_stale_state_stops_within_one_tick(bundle, loop):
    executor, probe, add = loop
    node = add(controller(bundle))
    assert spin_until(executor, lambda: len(probe.policy_commands()) >= 5, 10.0), "no policy commands"
    assert probe.modes and probe.modes[-1] != "REJECTED"
    probe.feeding = False
    last_fed = probe.last_fed
    assert spin_until(executor, lambda: any(is_stop(c) and c[0] > last_fed for c in probe.commands), 5.0)
    first_stop = next(c[0] for c in probe.commands if is_stop(c) and c[0] > last_fed)
    timeout, period = 0.2, 1 / 50
    assert timeout - 0.01 <= first_stop - last_fed <= timeout + period + 0.05
    assert all(is_stop(c) for c in probe.commands if c[0] >= first_stop), "a command after the stop"
    assert spin_until(executor, lambda: errors_with(probe, "stale"), 3.0), "no ERROR diagnostic for stale state"
    assert spin_until(executor, lambda: probe.modes[-1] == "REJECTED", 2.0)
    assert node.decision.reason.startswith("state is stale")


def test_state_stamped_in_the_future_is_rejected(bundle, loop):
    """One hour ahead: it would read as fresh for an hour; the node sends the stop instead."""
    executor, probe, add = loop
    probe.stamp = lambda: (probe.get_clock().now() + Duration(seconds=3600)).to_msg()
    node = add(controller(bundle, diagnostics_rate_hz=10.0))
    assert spin_until(executor, lambda: errors_with(probe, "in the future") and len(probe.commands) > 3, 8.0)
    assert all(is_stop(c) for c in probe.commands)
    assert node.decision.mode is Mode.REJECTED


@pytest.mark.parametrize("policy", ["reject", "warn"])
def test_a_state_far_outside_the_trained_range(bundle, loop, policy):
    """reject (the default): the stop action and an ERROR; warn: the policy's command, and the
    warning in a WARN (or, when its decision is also UNSAFE, ERROR) diagnostic."""
    executor, probe, add = loop
    probe.state = (100.0, 0.0)
    add(controller(bundle, diagnostics_rate_hz=10.0, out_of_range=policy))
    level = DiagnosticStatus.ERROR if policy == "reject" else DiagnosticStatus.WARN
    assert spin_until(executor, lambda: any(s.level >= level and "outside the trained observation range" in s.message
                                            for _, s in probe.diagnostics), 8.0)
    assert probe.commands and all(is_stop(c) for c in probe.commands) == (policy == "reject")


def test_no_state_and_nan_state_are_rejected(bundle, loop):
    executor, probe, add = loop
    probe.feeding = False
    node = add(controller(bundle, diagnostics_rate_hz=10.0))
    assert spin_until(executor, lambda: errors_with(probe, "no state received"), 8.0)
    assert probe.commands and all(is_stop(c) for c in probe.commands)
    probe.state, probe.feeding = (math.nan, 0.0), True
    assert spin_until(executor, lambda: errors_with(probe, "non-finite values at indices [0]"), 5.0)
    assert all(is_stop(c) for c in probe.commands), "a NaN state produced a policy command"
    probe.state = SAFE_STATE
    assert spin_until(executor, lambda: probe.policy_commands(), 5.0), "no recovery after finite states"
    # A mode change back to NOMINAL logs at INFO after the WARNs (rclpy refuses a severity
    # change at one call site: this once crashed the node on the first NOMINAL tick).
    node._record(Decision(np.zeros(2), Mode.NOMINAL, "", -1.0, -1.0, 0.0, 0.1))
    node._record(Decision(np.zeros(2), Mode.REJECTED, "test", -1.0, -1.0, 0.0, 0.1))


def test_task_config_may_rename_topics_but_not_change_the_policys_inputs(bundle, loop, tmp_path):
    """`task_config` replaces the spec the bundle records only where it matches: the same robot
    under other topic names runs; a config that reads other fields is refused at start-up,
    showing the bundle's value and the config's."""
    recorded = TaskSpec.of_task(load_bundle(bundle, check=False).meta["task"]).to_dict()
    renamed = tmp_path / "renamed.yaml"
    renamed.write_text(yaml.safe_dump({"task": "boat", "spec": {
        **recorded, "inputs": {"odom": {**recorded["inputs"]["odom"], "topic": "/other/odom"}},
        "command": {**recorded["command"], "topic": "/other/cmd_vel"}}}))
    executor, probe, add = loop
    add(controller(bundle, task_config=str(renamed)))
    assert spin_until(executor, lambda: probe.count_subscribers("/other/odom") == 1
                      and probe.count_publishers("/other/cmd_vel") == 1, 8.0), "not on the renamed topics"
    assert probe.count_subscribers("/boat/odom") == 0
    wider = tmp_path / "wider.yaml"  # the same fields, but commands scaled to twice the range
    wider.write_text(yaml.safe_dump({"task": "boat", "spec": {
        **recorded, "command": {**recorded["command"], "low": [-2.0, -2.0], "high": [2.0, 2.0]}}}))
    node = Controller(parameter_overrides=[Parameter("bundle", value=str(bundle)),
                                           Parameter("task_config", value=str(wider))])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE and node.runtime is None
    finally:
        node.destroy_node()
    with pytest.raises(TaskSpecError, match=r"command.high: the bundle \[1.0, 1.0\], parameter task_config "
                                            r"\[2.0, 2.0\]; command.low: the bundle \[-1.0, -1.0\]"):
        load_bundle(bundle).task_spec(TaskSpec.load(str(wider)), "parameter task_config")


def test_a_spec_of_another_width_is_refused_at_start(bundle, tmp_path):
    """A bundle whose task spec reads 3 state fields for a 2-input policy would reject every
    state forever: the node refuses to start instead, naming both widths."""
    bad = tmp_path / "bundle"
    shutil.copytree(bundle, bad)
    meta = json.loads((bad / "bundle.json").read_text())
    topic_signal = {"topic": "/boat/margin", "type": "std_msgs/msg/Float64", "field": "data"}
    meta["task"]["spec"] = {
        "control_period": 0.005, "max_age": 0.0125,
        "state": {"topic": "/boat/odom", "type": "nav_msgs/msg/Odometry", "stamp": "header",
                  "fields": ["pose.pose.position.x", "pose.pose.position.y", "pose.pose.position.z"]},
        "command": {"topic": "/boat/cmd_vel", "type": "geometry_msgs/msg/Twist", "fields": ["linear.x", "linear.y"],
                    "low": [-1.0, -1.0], "high": [1.0, 1.0]},
        "reward": topic_signal, "margin": topic_signal}
    (bad / "bundle.json").write_text(json.dumps(meta))
    node = Controller(parameter_overrides=[Parameter("bundle", value=str(bad))])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node.runtime is None and node.hardware_id == "unconfigured"
        with pytest.raises(TaskSpecError, match="reads 3 observation values .* the bundle's networks take 2"):
            load_bundle(bad).task_spec()
    finally:
        node.destroy_node()


def test_state_trigger_decides_on_arrival(bundle, loop):
    """trigger=state at a slow 4 Hz control rate, fed at 50 Hz: decisions follow states at once
    (latency far below the 250 ms period) but at most one per quarter period, and the timer still
    stops the boat when the states stop."""
    executor, probe, add = loop
    add(controller(bundle, trigger="state", control_rate_hz=4.0, state_timeout=0.3))
    latencies: list[float] = []
    probe.create_subscription(Float64, "/safefql_controller/latency_ms", lambda m: latencies.append(m.data), 10)
    assert spin_until(executor, lambda: len(probe.policy_commands()) >= 6, 10.0)
    begin = len(probe.policy_commands())
    spin_until(executor, lambda: False, 2.0)
    rate = (len(probe.policy_commands()) - begin) / 2.0
    # The first state at least 62.5 ms after a decision: every 4th of the 20 ms feed, 12.5/s.
    assert 10.0 <= rate <= 16.0, f"{rate} decisions/s: expected one per quarter period, not per state (50/s)"
    assert latencies and float(np.median(latencies)) < 60.0, f"median latency {np.median(latencies)} ms"
    probe.feeding = False
    last_fed = probe.last_fed
    assert spin_until(executor, lambda: any(is_stop(c) and c[0] > last_fed for c in probe.commands), 5.0)


def test_diagnostics_rate_and_keys(bundle, loop):
    executor, probe, add = loop
    add(controller(bundle, diagnostics_rate_hz=10.0))
    assert spin_until(executor, lambda: probe.policy_commands(), 10.0)
    start = len(probe.diagnostics)
    spin_until(executor, lambda: False, 1.5)
    window = probe.diagnostics[start:]
    rate = (len(window) - 1) / (window[-1][0] - window[0][0])
    assert 7.5 <= rate <= 12.5, f"diagnostics at {rate:.1f} Hz, configured 10 Hz"
    status = window[-1][1]
    assert status.hardware_id and status.level in (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR)
    values = {kv.key: kv.value for kv in status.values}
    assert DIAG_KEYS <= set(values), f"missing keys {DIAG_KEYS - set(values)}"
    assert values["mode"] in ("NOMINAL", "INTERVENE", "UNSAFE") and 0 <= float(values["state_age_ms"]) < 200
    expected = {"NOMINAL": DiagnosticStatus.OK, "INTERVENE": DiagnosticStatus.WARN, "UNSAFE": DiagnosticStatus.ERROR}
    slow = status.level == DiagnosticStatus.WARN and "inference took" in status.message
    assert status.level == expected[values["mode"]] or slow


def _run_controller(*ros_args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "safefql_ros.controller", "--ros-args", *ros_args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigterm_publishes_final_stop(bundle, loop):
    """A controller process brought up through its lifecycle services (as the lifecycle
    manager does) decides; SIGTERM ends it with a final stop."""
    executor, probe, _ = loop
    proc = _run_controller("-p", f"bundle:={bundle}", "-p", f"stop_action:={STOP}", "-p", "override_decision:=true",
                           "-p", "control_rate_hz:=50.0", "-p", "state_timeout:=0.2")
    try:
        bring_up(probe, executor, ["/safefql_controller"], timeout=30.0)
        assert spin_until(executor, lambda: len(probe.policy_commands()) >= 3 or proc.poll() is not None, 30.0)
        assert proc.poll() is None, proc.communicate()[0]
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        spin_until(executor, lambda: proc.poll() is not None, 10.0)
        spin_until(executor, lambda: False, 0.3)
    finally:
        if proc.poll() is None:
            proc.kill()
        output = proc.communicate()[0]
    assert proc.returncode == 0, output
    assert "published the final stop command" in output
    after = [c for c in probe.commands if c[0] > sent]
    assert after and is_stop(after[-1]), f"last command after SIGTERM is {after[-1:]}, not the stop action"


def test_missing_bundle_fails_configure(bundle, loop, tmp_path):
    """The bundle is loaded at configure: a missing one fails that transition with the reason
    (the node stays unconfigured, as a Nav2 node does); the lifecycle manager reports it."""
    executor, probe, _ = loop
    proc = _run_controller("-r", "__node:=nobundle", "-p", f"bundle:={tmp_path / 'nope'}")
    try:
        with pytest.raises(LifecycleError, match="/nobundle: the 'configure' transition failed"):
            bring_up(probe, executor, ["nobundle"], timeout=30.0)
        assert proc.poll() is None, "an unconfigurable controller should stay up, unconfigured"
    finally:
        output = _stop(proc)
    assert "cannot configure" in output and "is not a policy bundle" in output, output


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=15)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[0]


def test_closed_loop_with_boat_sim(bundle, loop):
    executor, probe, add = loop
    probe.listen_to_sim()
    add(BoatSim(parameter_overrides=[Parameter("initial_states", value=[-2.0, 0.0, -2.5, 1.0]),
                                     Parameter("episode_steps", value=100)]))
    add(controller(bundle, control_rate_hz=0.0, state_timeout=0.05))
    assert spin_until(executor, lambda: len(probe.policy_commands()) >= 20 and len(probe.odom) >= 20, 10.0)
    begin = (len(probe.commands), len(probe.odom))
    # 50 more of each and the automatic reset after 100 steps, waited for by count (0.5 s at
    # 200 Hz): a loaded machine slows the loop, it does not break it
    def counts() -> tuple[int, int]:
        return len(probe.commands) - begin[0], len(probe.odom) - begin[1]
    assert spin_until(executor, lambda: min(counts()) >= 50 and max(probe.episodes, default=0) >= 1, 20.0), \
        f"in 20 s: {counts()} commands and states, episodes {sorted(set(probe.episodes))}"
    assert any(m != "REJECTED" for m in probe.modes)
    xs = [x for x, _ in probe.odom]
    assert min(xs) >= -3.0 and max(xs) > -2.0 + 0.1, "the boat did not move with the current"


def test_float_topics_carry_the_decision(bundle, loop):
    executor, probe, add = loop
    node = add(controller(bundle))
    got: dict[str, float] = {}
    latencies: list[float] = []
    for name in ("safety/q_value", "safety/v_value", "safety/margin", "inference_ms"):
        probe.create_subscription(Float64, f"/safefql_controller/{name}",
                                  lambda m, n=name: got.__setitem__(n, m.data), 10)
    probe.create_subscription(Float64, "/safefql_controller/latency_ms", lambda m: latencies.append(m.data), 10)
    assert spin_until(executor, lambda: len(got) == 4 and probe.policy_commands() and
                      math.isfinite(got["safety/q_value"]) and len(latencies) >= 10, 10.0)
    d = node.decision
    assert math.isclose(got["safety/margin"], d.threshold - got["safety/q_value"], abs_tol=1e-6)
    assert got["inference_ms"] >= 0
    # One latency per fed state (50 Hz feed, 50 Hz ticks), each within a tick period plus slack.
    commands = len(probe.policy_commands())
    assert len(latencies) <= commands + 2
    assert all(0 < ms < 20 + 50 for ms in latencies), latencies


def test_sim_time_drives_ticks_and_state_age(bundle, loop):
    """With use_sim_time the tick and the state age follow /clock: a paused clock pauses the
    controller (no commands at all), and staleness is measured in sim seconds."""
    executor, probe, add = loop
    sim = {"ns": 1000 * 10**9, "running": True}
    clock = add(Node("clock"))
    clock_pub = clock.create_publisher(Clock, "/clock", 10)

    def advance() -> None:
        sim["ns"] += 10_000_000 if sim["running"] else 0
        clock_pub.publish(Clock(clock=Time(nanoseconds=sim["ns"]).to_msg()))

    clock.create_timer(0.01, advance)
    probe.stamp = lambda: Time(nanoseconds=sim["ns"]).to_msg()
    add(controller(bundle, use_sim_time=True))
    assert spin_until(executor, lambda: len(probe.policy_commands()) >= 5, 10.0), "no commands in sim time"
    sim["running"] = False
    spin_until(executor, lambda: False, 0.1)
    paused = len(probe.commands)
    spin_until(executor, lambda: False, 0.6)
    assert len(probe.commands) - paused <= 1, "the controller ticked while /clock was paused"
    probe.feeding, sim["running"] = False, True
    resumed_ns = sim["ns"]
    assert spin_until(executor, lambda: errors_with(probe, "stale"), 5.0)
    assert sim["ns"] - resumed_ns >= 0.2 * 10**9, "stale before 0.2 s of sim time passed"


def test_boat_sim_reset_topic(loop):
    executor, probe, add = loop
    probe.listen_to_sim()
    # No automatic reset during the test (400 steps are 2 s: a loaded machine gets there), so
    # the sampler's draws are the start-up episode's and the NaN reset's only.
    add(BoatSim(parameter_overrides=[Parameter("seed", value=5), Parameter("episode_steps", value=10**6)]))
    reset = probe.create_publisher(Point, "/boat/reset", 10)
    assert spin_until(executor, lambda: probe.odom and reset.get_subscription_count() > 0, 8.0)
    reset.publish(Point(x=-2.5, y=1.0))
    near = lambda: [p for p in probe.odom if abs(p[0] + 2.5) < 0.05 and abs(p[1] - 1.0) < 0.05]  # noqa: E731
    assert spin_until(executor, near, 5.0), "reset to (-2.5, 1.0) not seen on /boat/odom"
    assert spin_until(executor, lambda: probe.episodes and probe.episodes[-1] >= 1, 2.0)
    episodes = probe.episodes[-1]
    probe.odom.clear()
    reset.publish(Point(x=math.nan, y=math.nan))
    rng = np.random.default_rng(5)  # BoatSim's sampler: draw 1 was the start-up episode
    boat.sample_safe_states(rng, 1)
    expected = boat.sample_safe_states(rng, 1)[0]
    assert boat.margin(expected) < 0
    sampled = lambda: [p for p in probe.odom if np.hypot(*(np.array(p) - expected)) < 0.05]  # noqa: E731
    assert spin_until(executor, sampled, 5.0), f"NaN reset: no state near the sampled safe state {expected}"
    assert spin_until(executor, lambda: probe.episodes[-1] > episodes, 2.0)


def test_boat_sim_reset_service(loop):
    """`~/reset` (std_srvs/Trigger) starts the next listed initial state and says so."""
    executor, probe, add = loop
    probe.listen_to_sim()
    add(BoatSim(parameter_overrides=[Parameter("initial_states", value=[-2.0, 0.0, -2.5, 1.0]),
                                     Parameter("episode_steps", value=10**6)]))  # no automatic reset
    client = probe.create_client(Trigger, "/boat_sim/reset")
    assert spin_until(executor, lambda: client.service_is_ready() and probe.episodes, 8.0)
    future = client.call_async(Trigger.Request())
    assert spin_until(executor, future.done, 5.0), "no answer from /boat_sim/reset"
    assert future.result().success and "[-2.5, 1.0]" in future.result().message, future.result().message
    near = lambda: [p for p in probe.odom if abs(p[0] + 2.5) < 0.05 and abs(p[1] - 1.0) < 0.05]  # noqa: E731
    assert spin_until(executor, near, 5.0), "the reset start (-2.5, 1.0) was not seen on /boat/odom"


def test_boat_sim_watchdog_ignores_stale_and_non_finite_commands(loop):
    """The simulator drives as a thruster driver with a watchdog: a command older than
    `command_timeout`, or one that is not finite, gives zero thrust."""
    _, _, add = loop
    sim = add(BoatSim(parameter_overrides=[Parameter("command_timeout", value=0.5)]))
    np.testing.assert_array_equal(sim.fresh_command(2), [0.0, 0.0])  # nothing received yet
    sim.take_command(np.array([0.5, -0.25]))
    np.testing.assert_array_equal(sim.fresh_command(2), [0.5, -0.25])
    sim.take_command(np.array([math.nan, 0.5]))
    np.testing.assert_array_equal(sim.fresh_command(2), [0.0, 0.0])
    sim.command = (np.array([0.5, -0.25]), sim.get_clock().now().nanoseconds - 600_000_000)  # 0.6 s old
    np.testing.assert_array_equal(sim.fresh_command(2), [0.0, 0.0])


def test_parameters_are_validated(bundle, loop):
    _, _, add = loop
    with pytest.raises(InvalidParameterValueException, match=r"values must be finite and in \[-1, 1\]"):
        controller(bundle, stop_action=[2.0, 0.0])
    # Sizes need the bundle's act_dim: checked at configure, which then fails (unconfigured).
    for name, value, why in (("fallback_actions", [0.5, 0.5, 0.5], "needs a multiple of act_dim=2"),
                             ("stop_action", [0.5], "needs 2 values")):
        node = Controller(parameter_overrides=[Parameter("bundle", value=str(bundle)), Parameter(name, value=value)])
        try:
            assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
            assert node.runtime is None and node.diagnostic_status().message.startswith("unconfigured")
        finally:
            node.destroy_node()
    node = add(controller(bundle, fallback_actions=[-1.0, 0.0, 0.0, 1.0]))
    assert node.runtime.fallbacks.shape == (2, 2)
    assert "decision overridden (stop_action, fallback_actions)" in node.runtime.warnings[0]
    assert not node.set_parameters([Parameter("candidates", value=3)])[0].successful  # read-only
    assert not node.set_parameters([Parameter("stop_action", value=[0.0, 0.0])])[0].successful  # read-only


def test_a_decision_other_than_the_bundles_needs_override_decision(bundle, loop):
    """The bundle's δ* certifies its own decision: a node parameter that changes it fails the
    configure unless override_decision is true; parameters left at 'the bundle's' run it."""
    _, _, add = loop
    for name, value in (("candidates", 3), ("proposals", 4), ("noise", "sample"), ("stop_action", STOP)):
        node = Controller(parameter_overrides=[Parameter("bundle", value=str(bundle)), Parameter(name, value=value)])
        try:
            assert node.trigger_configure() == TransitionCallbackReturn.FAILURE, name
            assert node.runtime is None
        finally:
            node.destroy_node()
    node = add(Controller(parameter_overrides=[Parameter("bundle", value=str(bundle))]))
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.runtime.decision == load_bundle(bundle).decision and node.runtime.warnings == []


def test_state_timeout_changes_are_bounded_logged_and_reported(bundle, loop):
    """At 50 Hz, state_timeout may reach 10 periods (0.2 s) and no more; every accepted change
    is kept, logged and shown in /diagnostics."""
    executor, probe, add = loop
    node = add(controller(bundle, diagnostics_rate_hz=10.0))
    assert node.set_parameters([Parameter("state_timeout", value=0.2)])[0].successful
    assert node.runtime.cfg.state_timeout == 0.2
    for value in (math.nextafter(0.2, 1.0), 10.0):
        assert not node.set_parameters([Parameter("state_timeout", value=value)])[0].successful
    assert node.runtime.cfg.state_timeout == 0.2
    assert node.set_parameters([Parameter("state_timeout", value=0.0)])[0].successful   # back to the default
    assert node.runtime.cfg.state_timeout == pytest.approx(2.5 * 0.005)
    assert node.parameter_changes == ["state_timeout 0.2 s -> 0.2 s", "state_timeout 0.2 s -> 0.0125 s"]

    def reported() -> dict[str, str]:
        return {kv.key: kv.value for kv in probe.diagnostics[-1][1].values} if probe.diagnostics else {}
    assert spin_until(executor, lambda: reported().get("parameter_changes") == "2", 5.0)
    assert reported()["last_parameter_change"] == "state_timeout 0.2 s -> 0.0125 s"
    assert reported()["state_timeout_ms"] == "12.5"


def test_controller_sends_the_best_of_its_proposals(bundle, loop):
    """`proposals` reaches the runtime: each tick ranks that many actor noises in one call."""
    executor, probe, add = loop
    node = add(controller(bundle, proposals=4))
    assert node.runtime.decision.proposals == 4 and node.runtime._proposals.inputs["noise"].shape == (4, 2)
    assert spin_until(executor, lambda: len(probe.policy_commands()) >= 5, 10.0), "no policy commands"
    assert probe.modes[-1] in ("NOMINAL", "INTERVENE", "UNSAFE")
    with pytest.raises(InvalidParameterValueException):
        controller(bundle, proposals=-1)   # below the descriptor's range (0: the bundle's)


def test_controller_threshold_replaces_the_bundles_within_its_range(bundle, loop):
    """`threshold` reaches the runtime in place of the bundle's δ*; one outside the bundle's
    threshold range is refused at configure, with the range."""
    executor, probe, add = loop
    loaded = load_bundle(bundle)
    lo, hi = loaded.threshold_range
    inside = loaded.threshold + 0.5 * (hi - loaded.threshold)
    node = add(controller(bundle, threshold=inside))
    assert node.runtime.threshold == inside != loaded.threshold
    assert add(controller(bundle)).runtime.threshold == loaded.threshold   # unset: the bundle's
    outside = Controller(parameter_overrides=[Parameter("bundle", value=str(bundle)),
                                              Parameter("threshold", value=hi + 1.0)])
    add(outside)
    assert outside.trigger_configure() == TransitionCallbackReturn.FAILURE


def test_episode_monitor_is_active_once_it_hears_the_simulator(loop):
    """In the graph is not up yet for the monitor: the lifecycle manager configures the
    controller, whose first command starts episode 0, only once the monitor is active — which
    it refuses to be until the simulator's publishers have matched its subscriptions."""
    executor, probe, add = loop
    monitor = add(EpisodeMonitor(parameter_overrides=[Parameter("episodes", value=2)]))
    assert monitor.trigger_configure() == TransitionCallbackReturn.SUCCESS
    spin_until(executor, lambda: False, 0.5)
    assert monitor.trigger_activate() == TransitionCallbackReturn.FAILURE, "active without a simulator to hear"
    add(BoatSim(parameter_overrides=[Parameter("start_paused", value=True)]))
    assert spin_until(executor, monitor.hears_the_simulator, 15.0), "never heard the simulator"
    assert monitor.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert monitor.current is None, "a paused simulator announced an episode"


def test_episode_monitor_that_joins_late_counts_whole_episodes(loop):
    """A monitor whose subscriptions match while an episode is under way (the latched index is
    then a later one than 0) leaves that episode out and counts the following ones whole, by
    their index, instead of counting the one under way from its middle."""
    executor, probe, add = loop
    probe.listen_to_sim()
    states = boat.evaluation_states()
    sim = add(BoatSim(parameter_overrides=[Parameter("initial_states", value=states.ravel().tolist()),
                                           Parameter("episode_steps", value=40)]))
    assert spin_until(executor, lambda: sim.episode >= 3, 10.0), "the simulator did not reset on its own"
    monitor = add(EpisodeMonitor(parameter_overrides=[Parameter("episodes", value=2)]))
    assert spin_until(executor, lambda: monitor.current is not None, 5.0), "no episode index heard"
    joined = monitor.current
    assert joined >= 2
    assert spin_until(executor, lambda: monitor.finished, 10.0), monitor.episodes
    assert [e["episode"] for e in monitor.episodes] == [joined + 1, joined + 2]
    # Whole episodes, not the one under way: about 40 steps each. Not exactly: the episode index
    # and the odometry are two topics, so a sample at a reset may be counted on either side.
    assert all(abs(e["steps"] - 40) <= 3 for e in monitor.episodes), monitor.episodes


def test_episode_monitor_sees_every_announcement_after_a_stall(loop):
    """Three episode indices announced while the monitor's executor does not run (a loaded
    machine: two 0.4 s episodes pass in one stall) all reach it, in order: with a depth-1 queue
    only the last did, and the monitor took episodes 0 and 1 for a late join."""
    from std_msgs.msg import UInt32

    from safefql_ros.qos import LATCHED_QOS
    executor, probe, add = loop
    monitor = add(EpisodeMonitor(parameter_overrides=[Parameter("episodes", value=2)]))
    announcer = add(rclpy.create_node("announcer"))
    publisher = announcer.create_publisher(UInt32, "boat/episode", LATCHED_QOS)
    assert spin_until(executor, lambda: monitor.episode_sub.get_publisher_count() > 0
                      and publisher.get_subscription_count() > 0, 10.0), "the monitor never matched"
    for index in range(3):
        publisher.publish(UInt32(data=index))
    time.sleep(0.5)  # delivered into the monitor's queue; its callbacks have not run
    assert spin_until(executor, lambda: monitor.current == 2, 5.0), monitor.current
    assert monitor.whole, "the monitor missed episode 0's announcement and counted the run as joined late"


# ---- lifecycle, stamped commands, frames, QoS, diagnostics (issue 27) ---------------------------
def test_lifecycle_holds_the_stop_while_inactive(bundle, loop):
    """configure: loaded, holding the stop; activate: deciding; deactivate: the stop, held at the
    control rate; cleanup: nothing published, unconfigured; configure again works."""
    executor, probe, add = loop
    node = add(controller(bundle, activate=False, diagnostics_rate_hz=10.0))
    assert spin_until(executor, lambda: len(probe.commands) >= 10, 10.0), "an inactive controller sent no stop"
    assert all(is_stop(c) for c in probe.commands) and probe.modes[-1] == "INACTIVE"
    assert spin_until(executor, lambda: any(s.message.startswith("inactive") for _, s in probe.diagnostics), 5.0)
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert spin_until(executor, lambda: len(probe.policy_commands()) >= 5, 10.0), "no decisions once active"
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    deactivated = time.monotonic()
    assert spin_until(executor, lambda: len([c for c in probe.commands if c[0] > deactivated]) >= 10, 5.0)
    assert all(is_stop(c) for c in probe.commands if c[0] > deactivated), "a policy command after deactivate"
    assert probe.modes[-1] == "INACTIVE"
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    spin_until(executor, lambda: False, 0.2)
    cleaned = len(probe.commands)
    assert spin_until(executor, lambda: any(s.level == DiagnosticStatus.STALE and s.message.startswith("unconfigured")
                                            for _, s in probe.diagnostics[-3:]), 5.0)
    assert len(probe.commands) == cleaned, "an unconfigured controller still commands"
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS and node.runtime is not None


def spec_bundle(bundle, tmp_path, command: dict, state_frame: str = "odom") -> str:
    """A copy of the session bundle whose recorded task spec is the boat's with another command
    (the input the controller reads its interface from)."""
    from safefql_core.tasks import TaskSpec
    out = tmp_path / "bundle"
    shutil.copytree(bundle, out)
    meta = json.loads((out / "bundle.json").read_text())
    spec = TaskSpec.builtin("boat").to_dict()
    spec["command"] = {**spec["command"], **command}
    spec["inputs"]["odom"]["frame_id"] = state_frame
    meta["task"]["spec"] = spec
    (out / "bundle.json").write_text(json.dumps(meta))
    return str(out)


def test_stamped_command_and_state_frame(bundle, loop, tmp_path):
    """A spec asking for TwistStamped gets header.stamp (node clock) and frame_id; a state in
    another frame than the spec's state.frame_id is refused with the stop and the reason."""
    from geometry_msgs.msg import TwistStamped
    executor, probe, add = loop
    path = spec_bundle(bundle, tmp_path, {"topic": "/stamped/cmd_vel", "type": "geometry_msgs/msg/TwistStamped",
                                          "stamp": "header", "frame_id": "base_link",
                                          "fields": ["twist.linear.x", "twist.linear.y"]})
    stamped: list[TwistStamped] = []
    probe.create_subscription(TwistStamped, "/stamped/cmd_vel", stamped.append, COMMAND_QOS)
    node = add(controller(path, diagnostics_rate_hz=10.0))
    policy = lambda: [m for m in stamped if (m.twist.linear.x, m.twist.linear.y) != tuple(STOP)]  # noqa: E731
    assert spin_until(executor, lambda: len(policy()) >= 5, 10.0), "no stamped policy commands"
    last = stamped[-1]
    assert last.header.frame_id == "base_link"
    age = (node.get_clock().now().nanoseconds - Time.from_msg(last.header.stamp).nanoseconds) * 1e-9
    assert 0 <= age < 2.0, f"command stamp is {age} s old"
    probe.frame_id = "map"
    assert spin_until(executor, lambda: errors_with(probe, "state frame_id is 'map', the task spec expects 'odom'"),
                      5.0)
    refused = len(stamped)
    assert spin_until(executor, lambda: len(stamped) >= refused + 5, 5.0)
    assert all((m.twist.linear.x, m.twist.linear.y) == tuple(STOP) for m in stamped[refused + 1:])


def test_reliable_subscriber_hears_the_simulator(loop):
    """boat_sim publishes odometry reliable (depth 10): a reliable subscriber (a logger, rqt)
    connects as well as the controller's sensor-data one; frames are REP 105's."""
    from safefql_ros.boat_sim import ODOM_QOS
    executor, probe, add = loop
    reliable: list[Odometry] = []
    probe.create_subscription(Odometry, "/boat/odom", reliable.append, ODOM_QOS)
    add(BoatSim())
    assert spin_until(executor, lambda: len(reliable) >= 5, 10.0), "a reliable subscriber got no odometry"
    assert (reliable[-1].header.frame_id, reliable[-1].child_frame_id) == ("odom", "base_link")


def test_diagnostics_report_a_missing_clock_and_per_period_counts(bundle, loop):
    """Diagnostics run on the steady clock: with use_sim_time and no /clock they keep coming,
    STALE with "no /clock". With a clock but no state, every tick of a period is counted
    as rejected."""
    executor, probe, add = loop
    probe.feeding = False
    add(controller(bundle, use_sim_time=True, diagnostics_rate_hz=10.0))
    assert spin_until(executor, lambda: len(probe.diagnostics) >= 5, 5.0), "/diagnostics went silent without /clock"
    assert all(s.level == DiagnosticStatus.STALE and s.message.startswith("no /clock")
               for _, s in probe.diagnostics[1:]), [s.message for _, s in probe.diagnostics]
    assert not probe.commands, "commands without a clock"


def test_rejected_ticks_are_counted_per_period(bundle, loop):
    executor, probe, add = loop
    probe.feeding = False
    add(controller(bundle, diagnostics_rate_hz=5.0))

    def counts() -> dict[str, str]:
        return {kv.key: kv.value for kv in probe.diagnostics[-1][1].values} if probe.diagnostics else {}

    assert spin_until(executor, lambda: int(counts().get("ticks_in_period", 0)) >= 5, 5.0)
    values = counts()
    assert values["rejected_in_period"] == values["ticks_in_period"] and values["intervened_in_period"] == "0"
    assert int(values["ticks_in_period"]) <= 50 / 5 + 2, "counts are per period, not cumulative"


def test_mode_warnings_are_throttled(bundle, loop, capfd):
    """A mode flipping every tick (40 flips in well under a second) logs its WARN at most
    once a second; each change is still latched on ~/mode and counted in the diagnostics."""
    _, _, add = loop
    node = add(controller(bundle))
    capfd.readouterr()
    started = time.monotonic()
    for i in range(40):
        mode = Mode.REJECTED if i % 2 else Mode.NOMINAL
        node._record(Decision(np.zeros(2), mode, "flipping", -1.0, -1.0, 0.0, 0.1))
    assert time.monotonic() - started < 1.0, "too slow to test a 1 s throttle"
    warnings = capfd.readouterr().err.count("mode REJECTED: flipping")
    assert warnings == 1, f"{warnings} WARN lines for 20 flips to REJECTED"
    node.warned["REJECTED"] = (time.monotonic() - 1.0, node.warned["REJECTED"][1])  # a second later
    node._record(Decision(np.zeros(2), Mode.NOMINAL, "", -1.0, -1.0, 0.0, 0.1))
    node._record(Decision(np.zeros(2), Mode.REJECTED, "flipping", -1.0, -1.0, 0.0, 0.1))
    assert "mode REJECTED: flipping (19 more changes to REJECTED not logged)" in capfd.readouterr().err
    assert node.period_counts["rejected"] == 21, "every rejected tick is counted, logged or not"


def test_a_controller_that_cannot_be_built_leaves_no_lifecycle_services(bundle, loop):
    """A refused parameter at construction destroys the half-built node: its lifecycle
    services do not linger on the graph to swallow a lifecycle manager's request."""
    executor, probe, _ = loop
    with pytest.raises(InvalidParameterValueException):
        Controller(parameter_overrides=[Parameter("stop_action", value=[2.0, 0.0])])
    assert "/safefql_controller/change_state" not in dict(probe.get_service_names_and_types())

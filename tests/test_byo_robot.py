"""Bring your own robot: a robot defined only by a YAML written here, end to end.

A differential-drive "rover" that the package knows nothing about: its task YAML (topics,
fields, bounds, reward, margin) is written by the test, a bag of its topics is written with
rosbags, and `fit --bag` converts, trains, calibrates and exports. The bundle must carry the
exact spec, and a controller started with nothing but `bundle:=` must run the rover's topics.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from offline_train import calibrate, evaluate, fit
from safefql_core.bags import default_message, typestore, write_bag
from safefql_core.bundle import load_bundle
from safefql_core.data import load_dataset
from safefql_core.pipeline.calibrate import LOGGED
from safefql_core.pipeline.files import BUNDLE, CALIBRATION_FILE, DATASET
from safefql_core.tasks import NS, TaskSpec

PERIOD, EPISODES, STEPS, BEAMS = 0.1, 6, 60, 8
ROOM = 2.0  # walls at |x| = 2 and |y| = 2
ROVER = {
    "task": "rover",
    "spec": {
        "control_period": PERIOD,
        "max_age": 0.25,
        "inputs": {
            "odom": {"topic": "/rover/odom", "type": "nav_msgs/msg/Odometry", "stamp": "header"},
            "scan": {"topic": "/rover/scan", "type": "sensor_msgs/msg/LaserScan", "stamp": "header",
                     "max_age": 0.3},  # a 5 Hz lidar: each scan serves two 10 Hz ticks
        },
        "features": [
            {"name": "x", "input": "odom", "field": "pose.pose.position.x"},
            {"name": "y", "input": "odom", "field": "pose.pose.position.y"},
            {"name": "heading", "input": "odom", "yaw": "pose.pose.orientation", "encode": "sincos"},
            {"name": "lidar", "input": "scan", "sectors": 4},
        ],
        "terms": {
            "to_goal": {"kind": "distance", "position": ["x", "y"], "point": [1.0, 0.0]},
            "walls": {"kind": "lidar_clearance", "ranges": "lidar", "radius": 0.3},
            "fence": {"kind": "geofence", "position": ["x", "y"], "box": {"center": [0, 0], "size": [3.6, 3.6]}},
        },
        "command": {"topic": "/rover/cmd_vel", "type": "geometry_msgs/msg/TwistStamped", "stamp": "receive",
                    "fields": ["twist.linear.x", "twist.angular.z"], "low": [-0.5, -1.0], "high": [0.5, 1.0]},
        "reward": "-to_goal",
        "margin": "-min(walls, fence)",
    },
}


def ranges_in_room(x: float, y: float, theta: float) -> np.ndarray:
    """What a BEAMS-beam lidar (angle_min -pi) sees from (x, y, theta) in the square room."""
    angles = theta + np.linspace(-np.pi, np.pi, BEAMS, endpoint=False)
    d = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    with np.errstate(divide="ignore"):
        hits = (np.sign(d) * ROOM - [x, y]) / d
    return np.where(np.isfinite(hits), hits, np.inf).min(axis=1)


def rover_bag(path: Path, seed: int = 0) -> Path:
    """Unicycle episodes under random commands in the room: odometry at 10 Hz, a lidar at 5 Hz,
    stamped commands answering each state 2 ms late."""
    store = typestore("kilted")
    topics = {"/rover/odom": "nav_msgs/msg/Odometry", "/rover/scan": "sensor_msgs/msg/LaserScan",
              "/rover/cmd_vel": "geometry_msgs/msg/TwistStamped"}
    rng = np.random.default_rng(seed)
    odom, cmd = default_message(store, topics["/rover/odom"]), default_message(store, topics["/rover/cmd_vel"])
    scan = default_message(store, topics["/rover/scan"])
    scan.angle_min, scan.angle_max, scan.range_min, scan.range_max = -np.pi, np.pi, 0.1, 3.5

    def messages():
        t = 1_700_000_000 * NS
        for _ in range(EPISODES):
            x, y, theta = rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 1.0), rng.uniform(-np.pi, np.pi)
            for k in range(STEPS):
                odom.header.stamp.sec, odom.header.stamp.nanosec = divmod(t, NS)
                odom.pose.pose.position.x, odom.pose.pose.position.y = x, y
                odom.pose.pose.orientation.z, odom.pose.pose.orientation.w = np.sin(theta / 2), np.cos(theta / 2)
                yield "/rover/odom", t, odom
                if k % 2 == 0:
                    scan.header.stamp = odom.header.stamp
                    scan.ranges = ranges_in_room(x, y, theta).astype(np.float32)
                    yield "/rover/scan", t, scan
                v, w = rng.uniform(-0.5, 0.5), rng.uniform(-1.0, 1.0)
                cmd.twist.linear.x, cmd.twist.angular.z = v, w
                yield "/rover/cmd_vel", t + 2_000_000, cmd
                x, y, theta = x + v * np.cos(theta) * PERIOD, y + v * np.sin(theta) * PERIOD, theta + w * PERIOD
                t += round(PERIOD * NS)
            t += NS  # a second of silence: the converter ends the episode there

    write_bag(path, topics, messages(), store)
    return path


@pytest.fixture(scope="module")
def rover(tmp_path_factory) -> dict[str, Path]:
    """The rover's YAML and bag, through `fit --bag` (convert, train, calibrate, export)."""
    root = tmp_path_factory.mktemp("rover")
    config = root / "rover.yaml"
    config.write_text(yaml.safe_dump(ROVER))
    run = root / "run"
    assert fit.main(["--bag", str(rover_bag(root / "bag")), "--config", str(config), "--out", str(run),
                     "--steps", "20", "--no-progress",
                     "--set", "critic_hidden=[16,16]", "flow_hidden=[16,16]", "batch_size=32"]) == 0
    return {"config": config, "run": run, "bundle": run / BUNDLE}


def test_the_spec_travels_from_yaml_to_dataset_run_and_bundle(rover):
    spec = TaskSpec.load(rover["config"])
    data = load_dataset(rover["run"] / DATASET)
    assert data.attrs["task_spec"] == spec.to_dict() and data.attrs["task"] == "rover"
    run_config = yaml.safe_load((rover["run"] / "config.yaml").read_text())
    assert run_config["dataset_attrs"]["task_spec"] == spec.to_dict()
    task = load_bundle(rover["bundle"]).meta["task"]
    assert task["name"] == "rover" and TaskSpec.of_task(task) == spec
    # the features and the margin are what the YAML says, recomputed here independently
    assert data.attrs["observation_fields"] == ["x", "y", "heading_sin", "heading_cos",
                                                "lidar_0", "lidar_1", "lidar_2", "lidar_3"]
    obs = data.observations.astype(np.float64)
    np.testing.assert_allclose(np.hypot(obs[:, 2], obs[:, 3]), 1.0, atol=1e-5)
    fence = 1.8 - np.maximum(np.abs(obs[:, 0]), np.abs(obs[:, 1]))
    np.testing.assert_allclose(data.margins, -np.minimum(obs[:, 4:].min(axis=1) - 0.3, fence), atol=1e-5)
    np.testing.assert_allclose(data.rewards, -np.hypot(obs[:, 0] - 1.0, obs[:, 1]), atol=1e-5)


@pytest.mark.ros
def test_controller_started_with_only_the_bundle_runs_the_robots_topics(rover, ros):
    from geometry_msgs.msg import TwistStamped
    from nav_msgs.msg import Odometry
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import LaserScan
    from test_ros_nodes import spin_until

    from safefql_ros.controller import COMMAND_QOS

    probe = Node("rover_probe")
    commands: list[tuple[float, float]] = []
    probe.create_subscription(TwistStamped, "/rover/cmd_vel",
                              lambda m: commands.append((m.twist.linear.x, m.twist.angular.z)), COMMAND_QOS)
    odom_pub = probe.create_publisher(Odometry, "/rover/odom", qos_profile_sensor_data)
    scan_pub = probe.create_publisher(LaserScan, "/rover/scan", qos_profile_sensor_data)

    def feed() -> None:
        odom, scan = Odometry(), LaserScan(angle_min=-np.pi, angle_max=np.pi, range_min=0.1, range_max=3.5)
        odom.header.stamp = scan.header.stamp = probe.get_clock().now().to_msg()
        odom.pose.pose.position.x, odom.pose.pose.position.y, odom.pose.pose.orientation.w = 0.2, -0.1, 1.0
        scan.ranges = ranges_in_room(0.2, -0.1, 0.0).astype(np.float32).tolist()
        odom_pub.publish(odom)
        scan_pub.publish(scan)

    probe.create_timer(PERIOD / 2, feed)
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    proc = subprocess.Popen([sys.executable, "-m", "safefql_ros.controller", "--ros-args",
                             "-p", f"bundle:={rover['bundle']}"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    # The controller is a lifecycle node: the manager configures and activates it, as a launch does.
    manager = subprocess.Popen([sys.executable, "-m", "safefql_ros.lifecycle_manager", "--ros-args",
                                "-p", "node_names:=[safefql_controller]"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        subscribed = lambda: all(any(i.node_name == "safefql_controller"  # noqa: E731
                                     for i in probe.get_subscriptions_info_by_topic(topic))
                                 for topic in ("/rover/odom", "/rover/scan"))
        assert spin_until(executor, lambda: (subscribed() and len(commands) >= 5) or proc.poll() is not None,
                          30.0), "the controller did not subscribe to the rover's inputs and command its cmd_vel"
        assert proc.poll() is None, proc.communicate()[0]
        assert probe.get_subscriptions_info_by_topic("/boat/odom") == []
    finally:
        manager.terminate()
        manager.wait(timeout=20)
        proc.terminate()
        output = proc.communicate(timeout=20)[0]
        executor.remove_node(probe)
        probe.destroy_node()
    assert "/rover/odom, /rover/scan -> /rover/cmd_vel" in output, output
    low, high = np.array([-0.5, -1.0]), np.array([0.5, 1.0])
    assert all(np.all(low <= c) and np.all(c <= high) for c in map(np.array, commands))
    assert any(np.any(np.array(c) != 0.0) for c in commands), "only stop commands: every state was rejected"


def test_a_task_without_simulator_calibrates_on_logged_data_and_says_so(rover, capsys):
    run = str(rover["run"])
    assert calibrate.main(["--run", run, "--n", "200"]) == 0
    out = capsys.readouterr().out
    assert "note: calibrated on logged episodes (task 'rover' is defined by its spec alone" in out
    assert "the weaker statement" in out
    assert json.loads((rover["run"] / CALIBRATION_FILE).read_text())["source"] == LOGGED
    assert calibrate.main(["--run", run, "--source", "sim"]) == 2
    assert "--source sim: task 'rover' is defined by its spec alone and has no simulator" in capsys.readouterr().err


def test_a_fallback_threshold_is_printed(rover, capsys):
    # 40 held-out states cannot certify anything at violation rate <= 0.001 with 95 % confidence
    assert calibrate.main(["--run", str(rover["run"]), "--n", "40", "--epsilon", "0.001"]) == 0
    assert "WARNING: no threshold certified states at violation rate <= ε" in capsys.readouterr().out


def test_evaluate_on_a_task_without_simulator_points_to_open_loop_replay(rover, capsys):
    assert evaluate.main(["--bundle", str(rover["bundle"])]) == 2
    err = capsys.readouterr().err
    assert "task 'rover' is defined by its spec alone and has no simulator here" in err
    assert f"python -m offline_train.replay --bag BAG --bundle {rover['bundle']}" in err


def test_a_spec_called_boat_that_is_another_robot_is_never_calibrated_in_the_boat_simulator(
        tiny_boat_bag, tmp_path, capsys):
    """The boat's own topics and fields, but a margin 0.2 wider: not the simulator's robot."""
    spec = TaskSpec.builtin("boat").to_dict()
    config = tmp_path / "wide.yaml"
    config.write_text(yaml.safe_dump({"task": "boat", "spec": {**spec, "margin": "0.2 - obstacle_clearance"}}))
    run = tmp_path / "run"
    assert fit.main(["--bag", tiny_boat_bag, "--config", str(config), "--out", str(run), "--steps", "5",
                     "--no-progress", "--set", "critic_hidden=[16,16]", "flow_hidden=[16,16]", "batch_size=32"]) == 0
    out = capsys.readouterr().out
    assert "task 'boat' records a spec that is not its simulator's robot (reward or margin:" in out
    assert "note: calibrated on logged episodes" in out
    assert load_bundle(run / BUNDLE).meta["calibration"]["source"] == LOGGED
    assert calibrate.main(["--run", str(run), "--source", "sim"]) == 2
    assert "is not its simulator's robot" in capsys.readouterr().err
    assert evaluate.main(["--bundle", str(run / BUNDLE), "--episodes", "2"]) == 2


def test_the_guides_worked_example_loads():
    """docs/BRING_YOUR_OWN_ROBOT.md's TurtleBot YAML is a valid spec with the observation it describes."""
    guide = (Path(__file__).resolve().parents[1] / "docs" / "BRING_YOUR_OWN_ROBOT.md").read_text()
    block = guide.split("```yaml\n", 1)[1].split("```", 1)[0]
    doc = yaml.safe_load(block)
    spec = TaskSpec.from_dict(doc["spec"], doc["task"])
    assert spec.obs_dim == 16 and spec.observation_names[-2:] == ["to_goal_x", "to_goal_y"]
    assert spec.state_inputs() == ["odom", "scan"] and spec.max_age_of("scan") == 0.3


@pytest.mark.ros
def test_each_input_is_stale_after_its_own_max_age(rover, ros):
    """The rover's lidar may be 0.3 s old (its own max_age), odometry 0.25 s (the spec's, and the
    node's default state_timeout): a 0.27 s old scan is fine, a 0.27 s old odometry or a 0.32 s
    old scan is stale and the stop action goes out."""
    from nav_msgs.msg import Odometry
    from rclpy.parameter import Parameter
    from rclpy.time import Time
    from sensor_msgs.msg import LaserScan

    from safefql_ros.controller import Controller

    # out_of_range warn: this test is about ages, and its scan (1 m everywhere) lies outside what
    # the tiny training data saw.
    node = Controller(parameter_overrides=[Parameter("bundle", value=str(rover["bundle"])),
                                           Parameter("out_of_range", value="warn")])
    try:
        node.trigger_configure()
        node.trigger_activate()
        def decide(odom_age: float, scan_age: float) -> str:
            now = node.get_clock().now().nanoseconds
            odom, scan = Odometry(), LaserScan(range_min=0.1, range_max=3.5, ranges=[1.0] * BEAMS)
            odom.pose.pose.orientation.w = 1.0
            odom.header.stamp = Time(nanoseconds=now - round(odom_age * NS)).to_msg()
            scan.header.stamp = Time(nanoseconds=now - round(scan_age * NS)).to_msg()
            node._on_state("odom", odom)
            node._on_state("scan", scan)
            node._tick()
            return node.decision.reason if node.decision.mode.value == "REJECTED" else "decided"

        assert node.runtime.cfg.state_timeout == pytest.approx(0.25)
        assert decide(0.0, 0.27) == "decided"
        assert decide(0.27, 0.0).startswith("state is stale")
        assert decide(0.0, 0.32).startswith("state is stale")
        assert "in the future" in decide(-1.0, 0.0)       # one input from the future: the whole state
        assert decide(0.0, -0.004) == "decided"             # within the 5 ms tolerance, and fresh
    finally:
        node.destroy_node()

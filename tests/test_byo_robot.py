"""Bring your own robot: a robot defined only by a YAML written here, end to end.

A differential-drive "rover" that the package knows nothing about: its task YAML (topics,
fields, bounds, reward, margin) is written by the test, a bag of its topics is written with
rosbags, and `fit --bag` converts, trains, calibrates and exports. The bundle must carry the
exact spec, and a controller started with nothing but `bundle:=` must run the rover's topics.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from offline_train import fit
from offline_train.bags import default_message, typestore, write_bag
from safefql_core.bundle import load_bundle
from safefql_core.data import load_dataset
from safefql_core.tasks import NS, TaskSpec

PERIOD, EPISODES, STEPS = 0.1, 6, 60
ROVER = {
    "task": "rover",
    "spec": {
        "control_period": PERIOD,
        "max_age": 0.25,
        "state": {"topic": "/rover/odom", "type": "nav_msgs/msg/Odometry", "stamp": "header",
                  "fields": ["pose.pose.position.x", "pose.pose.position.y"]},
        "command": {"topic": "/rover/cmd_vel", "type": "geometry_msgs/msg/Twist", "stamp": "receive",
                    "fields": ["linear.x", "angular.z"], "low": [-0.5, -1.0], "high": [0.5, 1.0]},
        "reward": {"topic": "/rover/reward", "type": "std_msgs/msg/Float64", "field": "data"},
        "margin": {"topic": "/rover/margin", "type": "std_msgs/msg/Float64", "field": "data"},
    },
}


def rover_bag(path: Path, seed: int = 0) -> Path:
    """Unicycle episodes under random commands, with reward (-distance to (2, 0)) and margin
    (inside a disc of radius 0.3 at (1, 0.5) is unsafe) published beside the odometry."""
    store = typestore("kilted")
    topics = {"/rover/odom": "nav_msgs/msg/Odometry", "/rover/cmd_vel": "geometry_msgs/msg/Twist",
              "/rover/reward": "std_msgs/msg/Float64", "/rover/margin": "std_msgs/msg/Float64"}
    rng = np.random.default_rng(seed)
    odom, cmd = default_message(store, topics["/rover/odom"]), default_message(store, topics["/rover/cmd_vel"])
    reward, margin = (default_message(store, "std_msgs/msg/Float64") for _ in range(2))

    def messages():
        t = 1_700_000_000 * NS
        for _ in range(EPISODES):
            x, y, theta = rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(-np.pi, np.pi)
            for _ in range(STEPS):
                odom.header.stamp.sec, odom.header.stamp.nanosec = divmod(t, NS)
                odom.pose.pose.position.x, odom.pose.pose.position.y = x, y
                reward.data = -float(np.hypot(x - 2.0, y))
                margin.data = 0.3 - float(np.hypot(x - 1.0, y - 0.5))
                yield "/rover/odom", t, odom
                yield "/rover/reward", t, reward
                yield "/rover/margin", t, margin
                v, w = rng.uniform(-0.5, 0.5), rng.uniform(-1.0, 1.0)
                cmd.linear.x, cmd.angular.z = v, w
                yield "/rover/cmd_vel", t + 2_000_000, cmd  # a controller answers a little after the state
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
    return {"config": config, "run": run, "bundle": run / fit.BUNDLE}


def test_the_spec_travels_from_yaml_to_dataset_run_and_bundle(rover):
    spec = TaskSpec.load(rover["config"])
    data = load_dataset(rover["run"] / fit.DATASET)
    assert data.attrs["task_spec"] == spec.to_dict() and data.attrs["task"] == "rover"
    run_config = yaml.safe_load((rover["run"] / "config.yaml").read_text())
    assert run_config["dataset_attrs"]["task_spec"] == spec.to_dict()
    task = load_bundle(rover["bundle"]).meta["task"]
    assert task["name"] == "rover" and TaskSpec.of_task(task) == spec


@pytest.mark.ros
def test_controller_started_with_only_the_bundle_runs_the_robots_topics(rover, ros):
    from nav_msgs.msg import Odometry
    from geometry_msgs.msg import Twist
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data

    from safefql_ros.controller import COMMAND_QOS
    from test_ros_nodes import spin_until

    probe = Node("rover_probe")
    commands: list[tuple[float, float]] = []
    probe.create_subscription(Twist, "/rover/cmd_vel", lambda m: commands.append((m.linear.x, m.angular.z)),
                              COMMAND_QOS)
    odom_pub = probe.create_publisher(Odometry, "/rover/odom", qos_profile_sensor_data)

    def feed() -> None:
        msg = Odometry()
        msg.header.stamp = probe.get_clock().now().to_msg()
        msg.pose.pose.position.x, msg.pose.pose.position.y = 0.2, -0.1
        odom_pub.publish(msg)

    probe.create_timer(PERIOD / 2, feed)
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    proc = subprocess.Popen([sys.executable, "-m", "safefql_ros.controller", "--ros-args",
                             "-p", f"bundle:={rover['bundle']}"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        subscribed = lambda: any(i.node_name == "safefql_controller"  # noqa: E731
                                 for i in probe.get_subscriptions_info_by_topic("/rover/odom"))
        assert spin_until(executor, lambda: (subscribed() and len(commands) >= 5) or proc.poll() is not None,
                          30.0), "the controller neither subscribed to /rover/odom nor commanded /rover/cmd_vel"
        assert proc.poll() is None, proc.communicate()[0]
        assert probe.get_subscriptions_info_by_topic("/boat/odom") == []
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0]
        executor.remove_node(probe)
        probe.destroy_node()
    assert "/rover/odom -> /rover/cmd_vel" in output, output
    low, high = np.array([-0.5, -1.0]), np.array([0.5, 1.0])
    assert all(np.all(low <= c) and np.all(c <= high) for c in map(np.array, commands))
    assert any(np.any(np.array(c) != 0.0) for c in commands), "only stop commands: every state was rejected"

"""diffdrive_sim with real rclpy pub/sub: Odometry and LaserScan out, TwistStamped in, under a namespace."""
from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import TwistStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import LaserScan  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402
from test_ros_nodes import spin_until  # noqa: E402

from safefql_core.envs import diffdrive  # noqa: E402
from safefql_ros.diffdrive_sim import DiffDriveSim  # noqa: E402
from safefql_ros.qos import LATCHED_QOS  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.usefixtures("ros")]
NS = "/dd_test"


class Robot(Node):
    """What a controller sees of the robot: its odometry and scans; it sends TwistStamped."""

    def __init__(self) -> None:
        super().__init__("dd_probe")
        self.odom: list[Odometry] = []
        self.scans: list[LaserScan] = []
        self.violations: list[bool] = []
        self.create_subscription(Odometry, f"{NS}/odom", self.odom.append, qos_profile_sensor_data)
        self.create_subscription(LaserScan, f"{NS}/scan", self.scans.append, qos_profile_sensor_data)
        self.create_subscription(Bool, f"{NS}/violation", lambda m: self.violations.append(m.data), LATCHED_QOS)
        self.cmd = self.create_publisher(TwistStamped, f"{NS}/cmd_vel", 10)

    def send(self, v: float, w: float = 0.0) -> None:
        msg = TwistStamped()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = "base_link"
        msg.twist.linear.x, msg.twist.angular.z = v, w
        self.cmd.publish(msg)


@pytest.fixture
def loop():
    executor = SingleThreadedExecutor()
    # facing east from (1, 3): 1.3 m to the disc at (3, 3)
    sim = DiffDriveSim(namespace=NS, parameter_overrides=[Parameter("initial_states", value=[1.0, 3.0, 0.0])])
    probe = Robot()
    for node in (sim, probe):
        executor.add_node(node)
    yield executor, sim, probe
    for node in (sim, probe):
        executor.remove_node(node)
        node.destroy_node()


def test_publishes_odometry_and_scan_and_drives_on_twist_stamped(loop):
    executor, sim, probe = loop
    assert spin_until(executor, lambda: probe.odom and probe.scans, 10.0), "no odom / scan under the namespace"
    odom, scan = probe.odom[-1], probe.scans[-1]
    assert (odom.header.frame_id, odom.child_frame_id, scan.header.frame_id) == ("odom", "base_link", "base_link")
    assert odom.pose.pose.position.x == pytest.approx(1.0) and odom.pose.pose.orientation.w == pytest.approx(1.0)
    assert len(scan.ranges) == diffdrive.world().beams and scan.range_max == pytest.approx(3.5)
    assert scan.angle_min + (len(scan.ranges) - 1) * scan.angle_increment == pytest.approx(scan.angle_max)
    assert np.isposinf(scan.ranges).any()  # nothing in range on some beams: +inf (REP 117)
    infos = sim.get_publishers_info_by_topic(f"{NS}/odom")
    assert [i.qos_profile.reliability for i in infos] == [QoSReliabilityPolicy.RELIABLE]
    assert probe.odom[-1].pose.pose.position.x == pytest.approx(1.0)  # no command: it stands still
    assert spin_until(executor, lambda: (probe.send(0.5), probe.odom[-1].pose.pose.position.x > 1.1)[1], 10.0)
    last = probe.odom[-1]
    assert last.twist.twist.linear.x == pytest.approx(0.5) and last.pose.pose.position.y == pytest.approx(3.0)
    assert last.header.stamp.sec > 0


def test_a_collision_is_reported_and_starts_the_next_episode(loop):
    executor, sim, probe = loop
    assert spin_until(executor, lambda: probe.odom, 10.0)
    assert spin_until(executor, lambda: (probe.send(0.5), True in probe.violations)[1], 15.0), "no collision"
    # the next episode starts where the first did, and the violation is cleared
    assert spin_until(executor, lambda: probe.violations[-1] is False and sim.episode == 2, 5.0)
    assert probe.odom[-1].pose.pose.position.x < 1.5

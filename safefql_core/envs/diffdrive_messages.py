"""The diff-drive robot's readings and commands as standard ROS 2 messages.

One place that knows how a `diffdrive.Readings` row becomes a nav_msgs/Odometry and a
sensor_msgs/LaserScan, and how a geometry_msgs/TwistStamped becomes a command, used both by
the ROS node (rclpy messages) and by the bag writer (rosbags messages): so a recorded bag
and the live robot carry exactly the same values. Works on any message object with
attribute access, so it imports neither rclpy nor rosbags.

Frames follow REP 105: odometry in `odom`, the robot in `base_link`; the lidar sits at the
robot's centre, so scans are in `base_link` too. Topic names are relative (`odom`, `scan`,
`cmd_vel`), so a namespace isolates a robot; NAMESPACE is the one the launch files, the
bags and config/diffdrive.yaml use.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from safefql_core.envs import diffdrive

NAMESPACE = "diffdrive"
ODOM, SCAN, CMD_VEL = "odom", "scan", "cmd_vel"
TYPES = {ODOM: "nav_msgs/msg/Odometry", SCAN: "sensor_msgs/msg/LaserScan", CMD_VEL: "geometry_msgs/msg/TwistStamped"}
ODOM_FRAME, BASE_FRAME = "odom", "base_link"
NS = 1_000_000_000


def topic(name: str, namespace: str = NAMESPACE) -> str:
    """The absolute name of a relative topic under a namespace, as a bag records it."""
    return f"/{namespace.strip('/')}/{name}" if namespace.strip("/") else f"/{name}"


def set_stamp(header: Any, ns: int, frame_id: str) -> None:
    header.stamp.sec, header.stamp.nanosec = divmod(int(ns), NS)
    header.frame_id = frame_id


def fill_odometry(msg: Any, pose: np.ndarray, velocity: np.ndarray, stamp_ns: int) -> Any:
    """Odometry of pose (x, y, yaw) and body velocity (v, w): yaw as a z-rotation quaternion."""
    x, y, yaw = (float(v) for v in pose)
    set_stamp(msg.header, stamp_ns, ODOM_FRAME)
    msg.child_frame_id = BASE_FRAME
    msg.pose.pose.position.x, msg.pose.pose.position.y = x, y
    q = msg.pose.pose.orientation
    q.x, q.y, q.z, q.w = 0.0, 0.0, float(np.sin(yaw / 2)), float(np.cos(yaw / 2))
    msg.twist.twist.linear.x, msg.twist.twist.angular.z = float(velocity[0]), float(velocity[1])
    return msg


def fill_scan(msg: Any, ranges: np.ndarray, stamp_ns: int) -> Any:
    """LaserScan of one lidar reading (REP 117 ranges: +inf nothing seen, -inf too close)."""
    w = diffdrive.world()
    set_stamp(msg.header, stamp_ns, BASE_FRAME)
    msg.angle_min = w.angle_min
    msg.angle_max = w.angle_min + (w.beams - 1) * w.angle_increment
    msg.angle_increment = w.angle_increment
    msg.time_increment = 0.0
    msg.scan_time = diffdrive.DT
    msg.range_min, msg.range_max = w.range_min, w.range_max
    msg.ranges = np.asarray(ranges, dtype=np.float32)
    msg.intensities = np.zeros(0, dtype=np.float32)
    return msg


def fill_command(msg: Any, command: np.ndarray, stamp_ns: int) -> Any:
    """TwistStamped of a (v, w) command, in the robot's frame."""
    set_stamp(msg.header, stamp_ns, BASE_FRAME)
    msg.twist.linear.x, msg.twist.angular.z = float(command[0]), float(command[1])
    return msg


def command_of(msg: Any) -> np.ndarray:
    """The (v, w) of a TwistStamped."""
    return np.array([msg.twist.linear.x, msg.twist.angular.z], dtype=np.float64)

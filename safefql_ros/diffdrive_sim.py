"""`diffdrive_sim`: the diff-drive robot of `safefql_core.envs.diffdrive` (IR-SIM) as a ROS 2 node.

It behaves like a robot base with a lidar: it publishes `odom` (nav_msgs/Odometry, frames
odom -> base_link, reliable, depth 10) and `scan` (sensor_msgs/LaserScan, frame base_link)
once per control period, and drives with the latest `cmd_vel` (geometry_msgs/TwistStamped,
as Jazzy's diff_drive_controller and Nav2 take it). Topic names are relative, so a
namespace isolates a robot (`--ros-args -r __ns:=/diffdrive`, the task YAML's topics). A
command older than `command_timeout` is ignored (the robot stops), as a base driver's
watchdog does. It steps the same `DiffDriveEnv` the behaviour data and the evaluation use,
one step per period on a node-clock timer (real time, or `/clock` with use_sim_time).

Episodes: an episode ends when the robot touches an obstacle (`violation`, latched Bool,
goes true; IR-SIM stops the robot there) or after `episode_steps` steps. Its last state
stays published for one period (so the collision is seen, and the latched `true` is
delivered before the reset's `false` replaces it); then the next episode starts at
the next of `initial_states` (flat x, y, yaw list) or a sampled safe start. The `~/reset`
service (std_srvs/srv/Trigger) starts the next episode at once. The episode index is
published latched on `episode`, the true safety margin (robot radius minus clearance, > 0
in contact) on `margin`. With `start_paused` the robot waits, publishing its state, until
the first command arrives.

Run: `python -m safefql_ros.diffdrive_sim --ros-args -r __ns:=/diffdrive`.
"""
from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
from geometry_msgs.msg import TwistStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import LaserScan
from std_msgs.msg import Bool, Float64, UInt32
from std_srvs.srv import Trigger

from safefql_core.envs import diffdrive
from safefql_core.envs import diffdrive_messages as messages
from safefql_ros.node_tools import float_range, int_range, optional_array, run_node
from safefql_ros.qos import LATCHED_QOS

RELIABLE_DEPTH = 10  # ROS_CONVENTIONS.md: odometry reliable, depth 10


class DiffDriveSim(Node):
    """One simulated diff-drive robot with a lidar; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("diffdrive_sim", **kwargs)
        ro = {"read_only": True}
        self.command_timeout = self.declare_parameter("command_timeout", 2.5 * diffdrive.DT, ParameterDescriptor(
            description="A command older than this (s) is ignored: the robot stops",
            floating_point_range=float_range(0.0, 10.0), **ro)).value
        self.episode_steps = self.declare_parameter("episode_steps", diffdrive.EPISODE_STEPS, ParameterDescriptor(
            description="Steps per episode before the automatic reset", integer_range=int_range(1, 10**9), **ro)).value
        seed = self.declare_parameter("seed", 0, ParameterDescriptor(
            description="Seed of the sampled safe start poses", integer_range=int_range(0, 2**31 - 1), **ro)).value
        self.declare_parameter("initial_states", Parameter.Type.DOUBLE_ARRAY, ParameterDescriptor(
            description="Flat x, y, yaw list of episode start poses, used in turn; unset: sample safe starts", **ro))
        self.initial_states = self._initial_states()
        self.paused = self.declare_parameter("start_paused", False, ParameterDescriptor(
            description="Hold the robot (still publishing its state) until the first command arrives", **ro)).value

        self.env = diffdrive.DiffDriveEnv(seed=seed)
        self.episode = 0
        self.command: tuple[np.ndarray, int] | None = None  # ((v, w), receive ns)
        self.readings = self.env.readings()

        self.odom_pub = self.create_publisher(Odometry, messages.ODOM, RELIABLE_DEPTH)
        self.scan_pub = self.create_publisher(LaserScan, messages.SCAN, RELIABLE_DEPTH)
        self.margin_pub = self.create_publisher(Float64, "margin", RELIABLE_DEPTH)
        self.violation_pub = self.create_publisher(Bool, "violation", LATCHED_QOS)
        self.episode_pub = self.create_publisher(UInt32, "episode", LATCHED_QOS)
        self.create_subscription(TwistStamped, messages.CMD_VEL, self._on_command, RELIABLE_DEPTH)
        self.create_service(Trigger, "~/reset", self._on_reset_service)
        self.reset()
        self.create_timer(diffdrive.DT, self._step)

    def _initial_states(self) -> np.ndarray | None:
        flat = optional_array(self, "initial_states")
        if not flat:
            return None
        if len(flat) % 3 or not all(math.isfinite(v) for v in flat):
            raise ValueError(f"initial_states must be a flat list of finite x, y, yaw triples, got {flat}")
        return np.asarray(flat, dtype=np.float64).reshape(-1, 3)

    def reset(self) -> None:
        """Start the next episode at the next listed start pose, or a sampled safe one."""
        start = None if self.initial_states is None else self.initial_states[self.episode % len(self.initial_states)]
        self.readings = self.env.reset(None if start is None else start[None])
        self.ended = False
        if not self.paused:  # a paused start is announced when it runs (see _step)
            self.episode_pub.publish(UInt32(data=self.episode))
        self.violation_pub.publish(Bool(data=False))
        self.get_logger().info(f"episode {self.episode} starts at {self.readings.pose[0].round(3).tolist()}")
        self.episode += 1
        self._publish_state()

    def _on_reset_service(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.reset()
        response.success = True
        response.message = f"episode {self.episode - 1} starts at {self.readings.pose[0].round(4).tolist()}"
        return response

    def _on_command(self, msg: TwistStamped) -> None:
        self.command = (messages.command_of(msg), self.get_clock().now().nanoseconds)

    def current_command(self) -> np.ndarray:
        """The latest command if it is fresh and finite, else stop."""
        if self.command is not None:
            command, stamp = self.command
            fresh = (self.get_clock().now().nanoseconds - stamp) * 1e-9 <= self.command_timeout
            if fresh and np.isfinite(command).all():
                return command
        return np.zeros(2)

    def _step(self) -> None:
        if self.paused:
            if self.command is None:
                self._publish_state()
                return
            self.paused = False
            self.episode_pub.publish(UInt32(data=self.episode - 1))
            self.get_logger().info("first command received: the simulation runs")
        if self.ended:
            self.reset()
            return
        self.readings, _, _, collided, truncated, info = self.env.step(self.current_command()[None])
        self._publish_state()
        if collided[0]:
            self.violation_pub.publish(Bool(data=True))
            self.get_logger().warning(f"collision at {self.readings.pose[0].round(3).tolist()} "
                                      f"(margin {info['margin'][0]:.3f}): the episode ends")
        self.ended = bool(collided[0] or truncated[0])

    def _publish_state(self) -> None:
        now = self.get_clock().now().nanoseconds
        r = self.readings
        self.odom_pub.publish(messages.fill_odometry(Odometry(), r.pose[0], r.velocity[0], now))
        self.scan_pub.publish(messages.fill_scan(LaserScan(), r.ranges[0], now))
        self.margin_pub.publish(Float64(data=float(diffdrive.margin(r.pose[0, :2]))))


def main(args: list[str] | None = None) -> int:
    return run_node("diffdrive_sim", DiffDriveSim, args)


if __name__ == "__main__":
    sys.exit(main())

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
the first command arrives. What both simulator nodes share is in `safefql_ros.sim_node`.

Run: `python -m safefql_ros.diffdrive_sim --ros-args -r __ns:=/diffdrive`.
"""
from __future__ import annotations

import sys
from typing import Any

from geometry_msgs.msg import TwistStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import LaserScan
from std_msgs.msg import Bool, Float64

from safefql_core.envs import diffdrive
from safefql_core.envs import diffdrive_messages as messages
from safefql_ros.node_tools import run_node
from safefql_ros.qos import LATCHED_QOS
from safefql_ros.sim_node import SimNode

RELIABLE_DEPTH = 10  # ROS_CONVENTIONS.md: odometry reliable, depth 10


class DiffDriveSim(SimNode):
    """One simulated diff-drive robot with a lidar; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("diffdrive_sim", period=diffdrive.DT, episode_steps=diffdrive.EPISODE_STEPS,
                         start_fields=("x", "y", "yaw"), stop_means="the robot stops", episode_topic="episode",
                         **kwargs)
        self.env = diffdrive.DiffDriveEnv(seed=self.seed, episode_steps=self.episode_steps)
        self.readings = self.env.readings()

        self.odom_pub = self.create_publisher(Odometry, messages.ODOM, RELIABLE_DEPTH)
        self.scan_pub = self.create_publisher(LaserScan, messages.SCAN, RELIABLE_DEPTH)
        self.margin_pub = self.create_publisher(Float64, "margin", RELIABLE_DEPTH)
        self.violation_pub = self.create_publisher(Bool, "violation", LATCHED_QOS)
        self.create_subscription(TwistStamped, messages.CMD_VEL,
                                 lambda msg: self.take_command(messages.command_of(msg)), RELIABLE_DEPTH)
        self.start()

    def reset(self) -> None:
        """Start the next episode at the next listed start pose, or a sampled safe one."""
        start = self.next_start()
        self.readings = self.env.reset(None if start is None else start[None])
        self.ended = False
        self.violation_pub.publish(Bool(data=False))
        self.announce()
        self._publish_state()

    def start_text(self, digits: int) -> str:
        return str(self.readings.pose[0].round(digits).tolist())

    def _step(self) -> None:
        if not self.running():
            return
        if self.ended:
            self.reset()
            return
        self.readings, _, _, collided, truncated, info = self.env.step(self.fresh_command(2)[None])
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

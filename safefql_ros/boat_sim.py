"""`boat_sim`: the boat task of `safefql_core.envs.boat` as a ROS 2 node.

Steps the same `BoatEnv` the datasets and evaluation use, one step per control period on a
node-clock timer (real time, or `/clock` with use_sim_time), so a closed loop with the
controller runs exactly the dynamics the policy was trained on. Publishes the state through
the task spec (`boat/odom`: header-stamped, frames `odom` -> `base_link` per REP 105,
reliable depth 10 so any subscriber connects — the controller's sensor-data subscription and a
reliable logger alike), the true margin l(s) on `boat/margin`, and obstacle entry/exit events
on `boat/violation` (latched Bool). It takes the command type the spec names (Twist,
TwistStamped, an actuator array). Topic names are relative: a namespace isolates the boat.
A command older than `command_timeout`, or not finite, is ignored (zero thrust: the boat
drifts with the current), as a real thruster driver with a watchdog would. With
`start_paused` the boat waits, publishing its state, until the first command arrives (the
launcher uses it for counted demo episodes). What both simulator nodes share is in
`safefql_ros.sim_node`.

Resets: the `~/reset` service (std_srvs/srv/Trigger) starts the next episode at the next of
`initial_states` or a sampled safe state, and answers with the start; to start from a given
state, publish it on `boat/reset` (geometry_msgs/Point, x and y; NaN = sample one) — std_srvs
has no service that carries a state, and custom interfaces need a CMake build. Episodes last
`episode_steps` steps and then reset the same way; the episode index is published latched on
`boat/episode`.

Run: `python -m safefql_ros.boat_sim`.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np
from geometry_msgs.msg import Point
from nav_msgs.msg import Odometry
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool, Float64

from safefql_core.envs import boat
from safefql_core.tasks import TaskSpec
from safefql_ros.node_tools import message_class, relative, run_node
from safefql_ros.qos import LATCHED_QOS
from safefql_ros.sim_node import SimNode

# Odometry as robot drivers publish it (REP 105 frames, reliable): a reliable subscriber
# (a logger, rqt) connects, and so does a best-effort (sensor data) one.
ODOM_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
CHILD_FRAME = "base_link"


class BoatSim(SimNode):
    """One simulated boat; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("boat_sim", period=boat.DT, episode_steps=boat.EPISODE_STEPS, start_fields=("x", "y"),
                         stop_means="zero thrust", episode_topic="boat/episode", **kwargs)
        self.spec = TaskSpec.builtin("boat")
        self.env = boat.BoatEnv(seed=self.seed)
        self.inside = False

        ns = self.get_namespace()
        self.odom_pub = self.create_publisher(Odometry, relative(self.spec.state.topic, ns), ODOM_QOS)
        self.margin_pub = self.create_publisher(Float64, "boat/margin", 10)
        self.violation_pub = self.create_publisher(Bool, "boat/violation", LATCHED_QOS)
        self.create_subscription(message_class(self.spec.command.type), relative(self.spec.command.topic, ns),
                                 lambda msg: self.take_command(self.spec.action(msg)), 10)
        self.create_subscription(Point, "boat/reset", self._on_reset, 10)
        self.start()

    def reset(self, state: np.ndarray | None = None) -> None:
        """Start an episode at `state`, the next listed initial state, or a sampled safe one."""
        state = self.next_start() if state is None else state
        self.env.reset(None if state is None else np.asarray(state, dtype=np.float64)[None])
        self.announce()
        self._publish_state()

    def start_text(self, digits: int) -> str:
        return str(self.env.states[0].round(digits).tolist())

    def _on_reset(self, msg: Point) -> None:
        state = np.array([msg.x, msg.y])
        self.reset(state if np.isfinite(state).all() else None)

    def _step(self) -> None:
        if not self.running():
            return
        self.env.step(self.fresh_command(boat.ACT_DIM))
        if self.env.t >= self.episode_steps:
            self.reset()
        else:
            self._publish_state()

    def _publish_state(self) -> None:
        state = self.env.states[0]
        msg = self.spec.fill_state(Odometry(), state)
        self.spec.state.set_stamp(msg, self.get_clock().now().nanoseconds)  # and frame_id: odom
        msg.child_frame_id = CHILD_FRAME
        self.odom_pub.publish(msg)
        ell = float(boat.margin(state))
        self.margin_pub.publish(Float64(data=ell))
        if (ell > 0) != self.inside:
            self.inside = ell > 0
            self.violation_pub.publish(Bool(data=self.inside))
            if self.inside:
                self.get_logger().warning(f"entered an obstacle at {state.round(3).tolist()} (l={ell:.3f})")


def main(args: list[str] | None = None) -> int:
    return run_node("boat_sim", BoatSim, args)


if __name__ == "__main__":
    sys.exit(main())

"""`boat_sim`: the boat task of `safefql_core.envs.boat` as a ROS 2 node.

Steps the same `BoatEnv` the datasets and evaluation use, one step per control period on a
node-clock timer (real time, or `/clock` with use_sim_time), so a closed loop with the
controller runs exactly the dynamics the policy was trained on. Publishes the state through
the task spec (`boat/odom`: header-stamped, frames `odom` -> `base_link` per REP 105,
reliable depth 10 so any subscriber connects — the controller's sensor-data subscription and a
reliable logger alike), the true margin l(s) on `boat/margin`, and obstacle entry/exit events
on `boat/violation` (latched Bool). It takes the command type the spec names (Twist,
TwistStamped, an actuator array). Topic names are relative: a namespace isolates the boat.
A command older than
`command_timeout` is ignored (zero thrust: the boat drifts with the current), as a real
thruster driver with a watchdog would. With `start_paused` the boat waits, publishing its
state, until the first command arrives (the launcher uses it for counted demo episodes).

Resets: the `~/reset` service (std_srvs/srv/Trigger) starts the next episode at the next of
`initial_states` or a sampled safe state, and answers with the start; to start from a given
state, publish it on `boat/reset` (geometry_msgs/Point, x and y; NaN = sample one) — std_srvs
has no service that carries a state, and custom interfaces need a CMake build. Episodes last
`episode_steps` steps and then reset the same way; the episode index is published latched on
`boat/episode`.

Run: `python -m safefql_ros.boat_sim`.
"""
from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
from geometry_msgs.msg import Point
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool, Float64, UInt32
from std_srvs.srv import Trigger

from safefql_core.envs import boat
from safefql_core.tasks import TaskSpec
from safefql_ros.node_tools import float_range, int_range, message_class, optional_array, relative, run_node
from safefql_ros.qos import LATCHED_QOS

# Odometry as robot drivers publish it (REP 105 frames, reliable): a reliable subscriber
# (a logger, rqt) connects, and so does a best-effort (sensor data) one.
ODOM_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
CHILD_FRAME = "base_link"

class BoatSim(Node):
    """One simulated boat; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("boat_sim", **kwargs)
        ro = {"read_only": True}
        self.command_timeout = self.declare_parameter("command_timeout", 2.5 * boat.DT, ParameterDescriptor(
            description="A command older than this (s) is ignored: zero thrust",
            floating_point_range=float_range(0.0, 10.0), **ro)).value
        self.episode_steps = self.declare_parameter("episode_steps", boat.EPISODE_STEPS, ParameterDescriptor(
            description="Steps per episode before the automatic reset",
            integer_range=int_range(1, 10**9), **ro)).value
        seed = self.declare_parameter("seed", 0, ParameterDescriptor(
            description="Seed of the sampled safe initial states",
            integer_range=int_range(0, 2**31 - 1), **ro)).value
        self.declare_parameter("initial_states", Parameter.Type.DOUBLE_ARRAY, ParameterDescriptor(
            description="Flat x, y list of episode initial states, used in turn; unset: sample safe states", **ro))
        self.initial_states = self._initial_states()
        self.paused = self.declare_parameter("start_paused", False, ParameterDescriptor(
            description="Hold the boat (still publishing its state) until the first command arrives, so "
                        "a controller that starts later does not find the first episode under way", **ro)).value

        self.spec = TaskSpec.builtin("boat")
        self.env = boat.BoatEnv(seed=seed)
        self.episode = 0
        self.command: tuple[np.ndarray, int] | None = None  # (action in [-1, 1], receive ns)
        self.inside = False

        ns = self.get_namespace()
        self.odom_pub = self.create_publisher(Odometry, relative(self.spec.state.topic, ns), ODOM_QOS)
        self.margin_pub = self.create_publisher(Float64, "boat/margin", 10)
        self.violation_pub = self.create_publisher(Bool, "boat/violation", LATCHED_QOS)
        self.episode_pub = self.create_publisher(UInt32, "boat/episode", LATCHED_QOS)
        self.create_subscription(message_class(self.spec.command.type), relative(self.spec.command.topic, ns),
                                 self._on_command, 10)
        self.create_subscription(Point, "boat/reset", self._on_reset, 10)
        self.create_service(Trigger, "~/reset", self._on_reset_service)
        self.reset()
        self.create_timer(boat.DT, self._step)

    def _initial_states(self) -> np.ndarray | None:
        flat = optional_array(self, "initial_states")
        if not flat:
            return None
        if len(flat) % boat.OBS_DIM or not all(math.isfinite(v) for v in flat):
            raise ValueError(f"initial_states must be a flat list of finite x, y pairs, got {flat}")
        return np.asarray(flat, dtype=np.float64).reshape(-1, boat.OBS_DIM)

    def reset(self, state: np.ndarray | None = None) -> None:
        """Start an episode at `state`, the next listed initial state, or a sampled safe one."""
        if state is None and self.initial_states is not None:
            state = self.initial_states[self.episode % len(self.initial_states)]
        self.env.reset(None if state is None else np.asarray(state, dtype=np.float64)[None])
        if not self.paused:  # a paused start is announced when it runs (see _step)
            self.episode_pub.publish(UInt32(data=self.episode))
        self.get_logger().info(f"episode {self.episode} starts at {self.env.states[0].round(3).tolist()}")
        self.episode += 1
        self._publish_state()

    def _on_reset_service(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.reset()
        response.success = True
        response.message = f"episode {self.episode - 1} starts at {self.env.states[0].round(4).tolist()}"
        return response

    def _on_reset(self, msg: Point) -> None:
        state = np.array([msg.x, msg.y])
        self.reset(state if np.isfinite(state).all() else None)

    def _on_command(self, msg: Any) -> None:
        self.command = (self.spec.action(msg), self.get_clock().now().nanoseconds)

    def current_action(self) -> np.ndarray:
        """The latest command if it is fresh, else zero thrust."""
        if self.command is not None:
            action, stamp = self.command
            if (self.get_clock().now().nanoseconds - stamp) * 1e-9 <= self.command_timeout:
                return action
        return np.zeros(boat.ACT_DIM)

    def _step(self) -> None:
        if self.paused:
            if self.command is None:
                self._publish_state()
                return
            self.paused = False
            self.episode_pub.publish(UInt32(data=self.episode - 1))
            self.get_logger().info("first command received: the simulation runs")
        self.env.step(self.current_action())
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

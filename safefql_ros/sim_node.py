"""What the simulator nodes (`boat_sim`, `diffdrive_sim`) share: episodes and their starts,
a command watchdog, and a paused start.

A simulator node stands in for a robot driver, so it behaves like one in the ways a
controller can notice: a command older than `command_timeout`, or one that is not finite,
is ignored and the robot gets the zero command (a driver's watchdog); episodes start at the
next of `initial_states` (a flat list of start states, used in turn) or at a sampled safe
start; the `~/reset` service (std_srvs/srv/Trigger) starts the next episode at once; and with
`start_paused` the robot waits, still publishing its state, until the first command arrives,
so a controller that starts later does not find the first episode under way. The episode
index is published latched on `episode_topic` when the episode starts to run.

A subclass builds its environment and publishers, then calls `start()`; it implements
`reset()` (start the next episode, then `announce()`), `start_text()` and `_publish_state()`,
and calls `running()` at the top of its step.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import UInt32
from std_srvs.srv import Trigger

from safefql_ros.node_tools import float_range, int_range, optional_array
from safefql_ros.qos import LATCHED_QOS


class SimNode(Node):
    """A simulated robot's episode bookkeeping; see the module docstring."""

    def __init__(self, name: str, *, period: float, episode_steps: int, start_fields: tuple[str, ...],
                 stop_means: str, episode_topic: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        ro = {"read_only": True}
        self.period = period
        self.command_timeout = self.declare_parameter("command_timeout", 2.5 * period, ParameterDescriptor(
            description=f"A command older than this (s) is ignored: {stop_means}",
            floating_point_range=float_range(0.0, 10.0), **ro)).value
        self.episode_steps = self.declare_parameter("episode_steps", episode_steps, ParameterDescriptor(
            description="Steps per episode before the automatic reset", integer_range=int_range(1, 10**9), **ro)).value
        self.seed = self.declare_parameter("seed", 0, ParameterDescriptor(
            description="Seed of the sampled safe starts", integer_range=int_range(0, 2**31 - 1), **ro)).value
        self.start_fields = start_fields
        self.declare_parameter("initial_states", Parameter.Type.DOUBLE_ARRAY, ParameterDescriptor(
            description=f"Flat {', '.join(start_fields)} list of episode starts, used in turn; unset: sample "
                        "safe starts", **ro))
        self.initial_states = self._initial_states()
        self.paused = self.declare_parameter("start_paused", False, ParameterDescriptor(
            description="Hold the robot (still publishing its state) until the first command arrives, so "
                        "a controller that starts later does not find the first episode under way", **ro)).value
        self.episode = 0
        self.command: tuple[np.ndarray, int] | None = None  # (command, receive ns)
        self.episode_pub = self.create_publisher(UInt32, episode_topic, LATCHED_QOS)

    def start(self) -> None:
        """Start the first episode and the step timer (once the subclass is built)."""
        self.create_service(Trigger, "~/reset", self._on_reset_service)
        self.reset()
        self.create_timer(self.period, self._step)

    def _initial_states(self) -> np.ndarray | None:
        flat = optional_array(self, "initial_states")
        if not flat:
            return None
        width = len(self.start_fields)
        if len(flat) % width or not all(math.isfinite(v) for v in flat):
            raise ValueError(f"initial_states must be a flat list of finite ({', '.join(self.start_fields)}) "
                             f"groups of {width}, got {flat}")
        return np.asarray(flat, dtype=np.float64).reshape(-1, width)

    def next_start(self) -> np.ndarray | None:
        """The listed start of the episode about to begin, or None (sample a safe one)."""
        return None if self.initial_states is None else self.initial_states[self.episode % len(self.initial_states)]

    def announce(self) -> None:
        """Count the episode that has just been reset, and say where it starts."""
        if not self.paused:  # a paused start is announced when it runs (see running)
            self.episode_pub.publish(UInt32(data=self.episode))
        self.get_logger().info(f"episode {self.episode} starts at {self.start_text(3)}")
        self.episode += 1

    def _on_reset_service(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.reset()
        response.success = True
        response.message = f"episode {self.episode - 1} starts at {self.start_text(4)}"
        return response

    def take_command(self, command: np.ndarray) -> None:
        """Keep `command` with its receive time (for the watchdog)."""
        self.command = (command, self.get_clock().now().nanoseconds)

    def fresh_command(self, width: int) -> np.ndarray:
        """The latest command if it is fresh and finite, else zeros of `width`."""
        if self.command is not None:
            command, stamp = self.command
            fresh = (self.get_clock().now().nanoseconds - stamp) * 1e-9 <= self.command_timeout
            if fresh and np.isfinite(command).all():
                return command
        return np.zeros(width)

    def running(self) -> bool:
        """Whether this step simulates: a paused robot only publishes its state until the first
        command arrives, and then its first episode is announced."""
        if not self.paused:
            return True
        if self.command is None:
            self._publish_state()
            return False
        self.paused = False
        self.episode_pub.publish(UInt32(data=self.episode - 1))
        self.get_logger().info("first command received: the simulation runs")
        return True

    def reset(self) -> None:
        raise NotImplementedError

    def start_text(self, digits: int) -> str:
        raise NotImplementedError

    def _publish_state(self) -> None:
        raise NotImplementedError

    def _step(self) -> None:
        raise NotImplementedError

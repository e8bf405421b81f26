"""`safefql_lifecycle_manager`: configures and activates managed nodes in order, as Nav2's
lifecycle manager does (ROS_CONVENTIONS.md: "Launchers autostart it").

With `autostart` (the default) it brings every node of `node_names` up in turn — configure,
then activate — through each node's standard lifecycle services (`<node>/change_state`,
lifecycle_msgs), waiting up to `transition_timeout` for a node's services to appear and for
each transition to answer. A failed configure (a controller whose bundle cannot be loaded) is
an error naming the node and the transition: the manager exits with status 1, so the launch
ends and the node's own log says why. A refused activate is retried until the timeout: a node
may be active only once its inputs are there (the episode monitor: once it hears the
simulator), and the nodes after it wait for it. Once all are active it stays up, so the
launch keeps a process that owns the bring-up (and `ros2 launch`'s output shows it).
Without `autostart` it does nothing: bring the nodes up by hand (`ros2 lifecycle set`).

The launch files and `safefql-launch` start it from the shared description
(safefql_ros/description.py). `bring_up` is the same sequence for any rclpy node (tests).

Run: `python -m safefql_ros.lifecycle_manager --ros-args -p node_names:=[safefql_controller]`.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Any

from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from safefql_ros.node_tools import float_range, optional_array, shutdown, spin, start_node

RETRY_S = 0.1  # pause between activation attempts of a node that is not ready yet
TRANSITIONS = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE}


class LifecycleError(RuntimeError):
    """A managed node did not come up; the message names it, the transition and why."""


def _wait(executor: SingleThreadedExecutor, done: Any, deadline: float, stop: threading.Event | None) -> bool:
    while not done():
        if time.monotonic() > deadline or (stop is not None and stop.is_set()):
            return False
        executor.spin_once(timeout_sec=0.05)
    return True


def lifecycle_state(node: Node, executor: SingleThreadedExecutor, target: str, timeout: float) -> str:
    """The current lifecycle state label of the node `target` ('' if it does not answer)."""
    client = node.create_client(GetState, f"{target}/get_state")
    try:
        deadline = time.monotonic() + timeout
        if not _wait(executor, client.service_is_ready, deadline, None):
            return ""
        future = client.call_async(GetState.Request())
        return future.result().current_state.label if _wait(executor, future.done, deadline, None) else ""
    finally:
        node.destroy_client(client)


def bring_up(node: Node, executor: SingleThreadedExecutor, targets: list[str], timeout: float,
             stop: threading.Event | None = None, transitions: tuple[str, ...] = tuple(TRANSITIONS)) -> None:
    """Configure, then activate (or only the named `transitions`), each node of `targets`
    (names resolved against `node`'s namespace) in order; `executor` spins `node`. Raises
    LifecycleError on the first failure."""
    for target in targets:
        name = node.resolve_service_name(f"{target}/change_state").removesuffix("/change_state")
        client = node.create_client(ChangeState, f"{name}/change_state")
        try:
            if not _wait(executor, client.service_is_ready, time.monotonic() + timeout, stop):
                if stop is not None and stop.is_set():
                    return
                raise LifecycleError(f"{name}: no lifecycle service {name}/change_state after {timeout:g} s "
                                     "(is the node running, in this namespace and ROS domain?)")
            for label in transitions:
                deadline = time.monotonic() + timeout
                while True:
                    future = client.call_async(ChangeState.Request(transition=Transition(id=TRANSITIONS[label])))
                    if not _wait(executor, future.done, deadline, stop):
                        if stop is not None and stop.is_set():
                            return
                        raise LifecycleError(f"{name}: no answer to '{label}' within {timeout:g} s")
                    if future.result().success:
                        break
                    if label != "activate" or time.monotonic() > deadline:
                        raise LifecycleError(f"{name}: the '{label}' transition failed (the node's log says why)")
                    _wait(executor, lambda: False, time.monotonic() + RETRY_S, stop)  # not ready yet: again
                node.get_logger().info(f"{name}: {label}d")
        finally:
            node.destroy_client(client)


class LifecycleManager(Node):
    """Holds the parameters; `main` runs the bring-up (it spins while it waits)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("safefql_lifecycle_manager", **kwargs)
        ro = {"read_only": True}
        self.declare_parameter("node_names", Parameter.Type.STRING_ARRAY, ParameterDescriptor(
            description="Managed nodes to configure and activate, in this order (relative names follow the "
                        "manager's namespace)", **ro))
        self.autostart = self.declare_parameter("autostart", True, ParameterDescriptor(
            description="Bring the nodes up at start (false: leave them unconfigured)", **ro)).value
        self.transition_timeout = self.declare_parameter("transition_timeout", 30.0, ParameterDescriptor(
            description="Seconds to wait for a node's lifecycle services and for each transition (loading "
                        "and verifying a bundle takes seconds on a busy machine)",
            floating_point_range=float_range(0.1, 600.0), **ro)).value
        self.node_names = optional_array(self, "node_names")
        if not self.node_names:
            raise ValueError("parameter 'node_names' is not set; pass -p node_names:=[safefql_controller]")


def main(args: list[str] | None = None) -> int:
    node, stop = start_node("safefql_lifecycle_manager", LifecycleManager, args=args)
    if node is None:
        return 1
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if node.autostart:
            try:
                bring_up(node, executor, node.node_names, node.transition_timeout, stop)
            except LifecycleError as exc:
                node.get_logger().error(f"bring-up failed: {exc}")
                return 1
            if not stop.is_set():
                node.get_logger().info(f"all active: {', '.join(node.node_names)}")
        executor.remove_node(node)
        spin(node, stop)
    finally:
        shutdown(node)
    return 0


if __name__ == "__main__":
    sys.exit(main())

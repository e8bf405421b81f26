"""Small helpers every node of this package shares: parameter ranges and lookups, the
errors a bad parameter raises, message classes from type names, and signal handling.
"""
from __future__ import annotations

import ctypes
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterUninitializedException,
)
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from safefql_ros.description import LAUNCHER_PID_ENV

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_S = 0.5  # how often a launched node checks that its launcher still lives
ORPHAN_EXIT_S = 5.0  # an orphaned node's time for its final stop and shutdown before it exits anyway

# What declaring / reading a parameter raises for a missing, out-of-range or mistyped value.
PARAMETER_ERRORS = (ParameterUninitializedException, InvalidParameterValueException, InvalidParameterTypeException)


def float_range(low: float, high: float) -> list[FloatingPointRange]:
    """A ParameterDescriptor `floating_point_range` (rclpy checks it on every set)."""
    return [FloatingPointRange(from_value=low, to_value=high, step=0.0)]


def int_range(low: int, high: int) -> list[IntegerRange]:
    """A ParameterDescriptor `integer_range`."""
    return [IntegerRange(from_value=low, to_value=high, step=1)]


def relative(topic: str, namespace: str = "") -> str:
    """A task spec's topic (written absolute, `/boat/odom`, as bags record it) as a name
    relative to the node's `namespace` (`boat/odom`): without a namespace it is the same topic;
    under `namespace:=robot1` it becomes `/robot1/boat/odom`, so a namespace isolates a robot
    (ROS_CONVENTIONS.md). A topic already under the node's namespace (a robot recorded in its
    own namespace, `/diffdrive/odom` for a node in `/diffdrive`) is that same topic, `odom`.
    `/diagnostics` and `/clock` stay global by convention."""
    prefix = namespace.rstrip("/") + "/"
    if prefix != "/" and topic.startswith(prefix):
        return topic[len(prefix):]
    return topic.lstrip("/")


def optional_value(node: Node, name: str) -> Any:
    """A declared parameter without a default: its value, or None when it was not set."""
    try:
        return node.get_parameter(name).value
    except ParameterUninitializedException:
        return None


def optional_array(node: Node, name: str) -> list:
    """A declared array parameter without a default: its value, or [] when it was not set."""
    return list(optional_value(node, name) or [])


class ManagedNode(LifecycleNode):
    """A lifecycle node that releases its lifecycle services when destroyed, and is destroyed
    when its `setup` (parameters, subscriptions: what a subclass builds at construction)
    raises — a half-built node would keep answering on the graph."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        try:
            self.setup()
        except BaseException:
            self.destroy_node()
            raise

    def setup(self) -> None:
        """Build the node (subclasses); raising destroys it."""

    def destroy_node(self) -> None:
        """Also release the lifecycle state machine, which owns the lifecycle services: rclpy
        leaves it to the garbage collector, so a destroyed node's `change_state` would stay
        discoverable and swallow the next manager's request."""
        super().destroy_node()
        self._state_machine.destroy_when_not_in_use()


class MessageTypeError(ValueError):
    """A message type this install cannot handle; the message names the type and the fix."""


def message_class(type_name: str) -> type:
    """The rclpy class of a graph / bag type name such as 'nav_msgs/msg/Odometry'.

    rosidl_runtime_py is not installed here, so the generated module is imported directly.
    """
    parts = type_name.split("/")
    if len(parts) != 3 or parts[1] != "msg" or not all(parts):
        raise MessageTypeError(f"'{type_name}' is not a message type name of the form <package>/msg/<Name>")
    package, _, name = parts
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        raise MessageTypeError(
            f"message type {type_name} is not importable in this install (no {package}.msg.{name}); install "
            f"its ROS message package (pip: ros-{package.replace('_', '-')}) or leave the topic out") from None


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM (rclpy initialised without its own handlers).

    A flag, not an exception: an exception raised from a handler can surface inside rclpy's C
    calls (as a RuntimeError), in the middle of a bag write, or not at all while a spin waits
    on a stopped sim clock; the nodes' loops check the flag between callbacks instead.
    """
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def die_with_launcher(stop: threading.Event) -> None:
    """A node started by `safefql-launch` asks the kernel for SIGTERM when the launcher dies
    (prctl PR_SET_PDEATHSIG, Linux): even a SIGKILLed launcher leaves no node commanding on its
    own. SIGTERM, not SIGKILL, so the controller still sends its final stop. If the launcher
    died before this ran, the node stops itself the same way. A watcher thread also sets `stop`
    once the node's parent is no longer the launcher, and ends the process ORPHAN_EXIT_S later
    if its clean shutdown has not: the test of a SIGKILLed launcher found a node still running
    20 s later, in a few full runs under load, after the signal had set the flag (a shutdown
    that hangs, cause not found), and a node must never outlive its launcher. No-op elsewhere."""
    launcher = os.environ.get(LAUNCHER_PID_ENV, "")
    if not launcher.isdigit() or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(launcher):
        os.kill(os.getpid(), signal.SIGTERM)

    def watch() -> None:
        while os.getppid() == int(launcher):
            time.sleep(PARENT_POLL_S)  # a stop while the launcher lives is its teardown: keep watching
        stop.set()  # what the SIGTERM handler does: the node's spin loop ends it cleanly
        time.sleep(ORPHAN_EXIT_S)
        os._exit(1)  # the clean shutdown hung; no process of a dead launcher may stay

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def start_node(name: str, build: Callable[[], Node], errors: tuple[type[Exception], ...] = (),
               args: list[str] | None = None) -> tuple[Node | None, threading.Event]:
    """Initialise rclpy without its signal handlers and build the node: (node, stop flag), or
    (None, flag) after logging "cannot start: <why>" for a bad parameter or one of `errors`."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = stop_on_signals()
    die_with_launcher(stop)
    try:
        return build(), stop
    except (ValueError, *PARAMETER_ERRORS, *errors) as exc:
        rclpy.logging.get_logger(name).error(f"cannot start: {exc}")
        rclpy.try_shutdown()
        return None, stop


def spin(node: Node, stop: threading.Event, done: Callable[[], bool] = lambda: False) -> None:
    """Single-threaded spin until SIGINT/SIGTERM or `done()`, checking both every 0.1 s of
    wall time (so it also returns while a stopped /clock holds every timer)."""
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    while not stop.is_set() and not done():
        executor.spin_once(timeout_sec=0.1)


def shutdown(node: Node) -> None:
    node.destroy_node()
    rclpy.try_shutdown()


def run_node(name: str, build: Callable[[], Node], args: list[str] | None = None,
             errors: tuple[type[Exception], ...] = (), finish: Callable[[Node], None] = lambda node: None) -> int:
    """A node's whole life for a console entry point: start (exit status 1 if it cannot),
    spin until SIGINT/SIGTERM, then `finish` (a final stop, closing a bag) and shut down."""
    node, stop = start_node(name, build, errors, args)
    if node is None:
        return 1
    try:
        spin(node, stop)
    finally:
        finish(node)
        shutdown(node)
    return 0

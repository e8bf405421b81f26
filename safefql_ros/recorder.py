"""`safefql_recorder`: record ROS 2 topics into a rosbag2 with `rosbags` (`ros2 bag` is not
pip-installable; ENVIRONMENT.md).

Topics are taken from the ROS graph as their publishers appear (a discovery timer polls the
graph, so topics may appear late; after `discovery_timeout` it warns, naming the topics still
missing, and keeps waiting). Each topic is subscribed with `raw=True`, so messages go to the
bag as the CDR bytes that arrived, never deserialised, stamped with their receive time on the
node clock. The subscription QoS matches the publishers (best effort if any publisher is best
effort, transient local if all are latched) and their offered profiles are stored in the bag,
so `safefql_player` can offer the same QoS again. Connections carry the message definitions
of rosbags' typestore (the one safefql_core.bags reads with), so the bag is self-describing.
SIGINT / SIGTERM stop the recording between callbacks; messages already delivered to the node
by then are still written (for up to DRAIN_S), and the bag is always closed cleanly.

`matching_qos`, shared with the player, also lives here.

Run: `python -m safefql_ros.recorder --ros-args -p output:=bags/run1 -p topics:=[/boat/odom,/boat/cmd_vel]`.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from functools import partial
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import Connection, Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Writer, WriterError

from safefql_core.bags import DEFAULT_TYPESTORE, STORAGES, BagError, new_bag, typestore
from safefql_ros.node_tools import MessageTypeError, float_range, message_class, optional_array, run_node

GRAPH_POLL_S = 0.2  # how often the graph is polled for the publishers of missing topics
SUBSCRIPTION_DEPTH = 100  # a deep queue: a burst while the bag is written is not dropped
DRAIN_S = 0.5  # at a stop, how long the messages already delivered are still written


def matching_qos(offers: Iterable[tuple[str, str]], depth: int) -> QoSProfile:
    """A profile compatible with every (reliability, durability) policy name offered.

    Best effort if any offer is best effort (a reliable reader never matches a best-effort
    writer); transient local only if every offer is (a latched reader never matches a volatile
    writer), so late joiners still get the latched value. Without offers: reliable, volatile.
    """
    offers = list(offers)
    best_effort = any(reliability == "BEST_EFFORT" for reliability, _ in offers)
    latched = bool(offers) and all(durability == "TRANSIENT_LOCAL" for _, durability in offers)
    return QoSProfile(depth=depth,
                      reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def _bag_time(duration: Duration) -> QosTime:
    return QosTime(*divmod(duration.nanoseconds, 10**9))


def bag_qos(profile: QoSProfile) -> Qos:
    """An rclpy (graph) QoS profile as rosbags stores it in `offered_qos_profiles`."""
    return Qos(history=QosHistory[profile.history.name], depth=profile.depth,
               reliability=QosReliability[profile.reliability.name],
               durability=QosDurability[profile.durability.name],
               deadline=_bag_time(profile.deadline), lifespan=_bag_time(profile.lifespan),
               liveliness=QosLiveliness[profile.liveliness.name],
               liveliness_lease_duration=_bag_time(profile.liveliness_lease_duration),
               avoid_ros_namespace_conventions=profile.avoid_ros_namespace_conventions)


class Recorder(Node):
    """Records the `topics` parameter's topics into the new bag `output`; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("safefql_recorder", **kwargs)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        ro = {"read_only": True}
        output = self.declare_parameter("output", "", ParameterDescriptor(
            description="New rosbag2 directory to write (must not exist yet)", **ro)).value
        self.declare_parameter("topics", Parameter.Type.STRING_ARRAY, ParameterDescriptor(
            description="Topics to record, e.g. [/boat/odom, /boat/cmd_vel]", **ro))
        storage = self.declare_parameter("storage", "mcap", ParameterDescriptor(
            description=f"rosbag2 storage plugin: one of {sorted(STORAGES)}", **ro)).value
        self.discovery_timeout = self.declare_parameter("discovery_timeout", 5.0, ParameterDescriptor(
            description="Warn (and keep waiting) when a topic has no publisher after this many seconds",
            floating_point_range=float_range(0.1, 3600.0), **ro)).value
        topics = list(dict.fromkeys(self.resolve_topic_name(t) for t in optional_array(self, "topics")))
        if not output:
            raise BagError("parameter 'output' is not set; pass --ros-args -p output:=<new bag directory>")
        if not topics:
            raise BagError("parameter 'topics' is not set or empty; pass -p topics:=[/topic_a,/topic_b]")
        self.output = new_bag(output)
        self.store = typestore(DEFAULT_TYPESTORE)
        self.writer = Writer(self.output, version=9, storage_plugin=STORAGES[storage])
        try:
            self.writer.open()
        except WriterError as exc:
            raise BagError(f"cannot write bag {self.output}: {exc}") from None
        self.counts = dict.fromkeys(topics, 0)
        self.missing = set(topics)
        # Wall (steady) time: discovery must run before /clock exists when use_sim_time is set.
        self.steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.started_ns = self.steady.now().nanoseconds
        self.warn_after_s = self.discovery_timeout
        self.discovery_timer = self.create_timer(GRAPH_POLL_S, self._discover, clock=self.steady)
        self.get_logger().info(f"recording {topics} into {self.output} ({storage})")
        self._discover()

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for p in params:
            if p.name == "storage" and p.value not in STORAGES:
                return SetParametersResult(successful=False,
                                           reason=f"storage must be one of {sorted(STORAGES)}, got {p.value!r}")
        return SetParametersResult(successful=True)

    # ---- discovery -----------------------------------------------------------------------------
    def _discover(self) -> None:
        """Subscribe to every missing topic that now has publishers; warn about the rest."""
        for topic in sorted(self.missing):
            publishers = self.get_publishers_info_by_topic(topic)
            if not publishers:
                continue
            self.missing.discard(topic)
            try:
                self._subscribe(topic, publishers)
            except MessageTypeError as exc:
                self.get_logger().error(f"not recording {topic}: {exc}")
        if not self.missing:
            self.discovery_timer.cancel()
            return
        waited_s = (self.steady.now().nanoseconds - self.started_ns) * 1e-9
        if waited_s >= self.warn_after_s:
            self.get_logger().warning(f"no publisher after {waited_s:.0f} s on {sorted(self.missing)}; still waiting")
            self.warn_after_s += self.discovery_timeout

    def _subscribe(self, topic: str, publishers: list[Any]) -> None:
        types = sorted({p.topic_type for p in publishers})
        if len(types) > 1:
            raise MessageTypeError(f"its publishers disagree on the type ({types}); a bag topic has one type")
        msgtype = types[0]
        if msgtype not in self.store.fielddefs:
            raise MessageTypeError(f"rosbags' {DEFAULT_TYPESTORE} typestore has no definition of {msgtype}, "
                                   "so the bag could not describe it")
        cls = message_class(msgtype)
        profiles = [p.qos_profile for p in publishers]
        connection = self.writer.add_connection(topic, msgtype, typestore=self.store,
                                                offered_qos_profiles=[bag_qos(p) for p in profiles])
        qos = matching_qos(((p.reliability.name, p.durability.name) for p in profiles), SUBSCRIPTION_DEPTH)
        self.create_subscription(cls, topic, partial(self._write, connection), qos, raw=True)
        self.get_logger().info(f"recording {topic} ({msgtype}, {qos.reliability.name.lower()}, "
                               f"{qos.durability.name.lower()})")

    def _write(self, connection: Connection, data: bytes) -> None:
        self.writer.write(connection, self.get_clock().now().nanoseconds, data)
        self.counts[connection.topic] += 1

    def drain(self, limit_s: float = DRAIN_S) -> None:
        """Write what was delivered before the stop: a signal arrives between callbacks, with up
        to SUBSCRIPTION_DEPTH messages per topic still queued (the last ones a user wanted
        recorded). Spins without waiting until a round of callbacks writes nothing, or for at
        most `limit_s` of wall time while publishers go on."""
        executor = SingleThreadedExecutor()
        executor.add_node(self)
        deadline = time.monotonic() + limit_s
        try:
            written = -1
            while written != sum(self.counts.values()) and time.monotonic() < deadline:
                written = sum(self.counts.values())
                for _ in range(len(self.counts) + 1):  # one callback per spin: each topic and the timer
                    executor.spin_once(timeout_sec=0.0)
        finally:
            executor.remove_node(self)

    def close(self) -> None:
        """Write what was already delivered, finish the bag (always readable afterwards) and
        report what it holds."""
        self.drain()
        self.writer.close()
        counts = ", ".join(f"{t}: {n}" for t, n in self.counts.items())
        self.get_logger().info(f"wrote {self.output}: {sum(self.counts.values())} messages ({counts})")
        if self.missing:
            self.get_logger().warning(f"never found a publisher on {sorted(self.missing)}")


def main(args: list[str] | None = None) -> int:
    """Console entry point; exit status 1 with a clear message when the recording cannot start."""
    return run_node("safefql_recorder", Recorder, args, finish=Recorder.close)


if __name__ == "__main__":
    sys.exit(main())

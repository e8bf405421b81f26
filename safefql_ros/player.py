"""`safefql_player`: play a rosbag2 onto ROS 2 topics with `rosbags` (`ros2 bag play` is not
pip-installable; ENVIRONMENT.md).

Reads mcap and sqlite3 bags with `AnyReader` and publishes each message's stored CDR bytes
as they are (never deserialised), keeping the recorded inter-message timing divided by
`rate`. One loop sleeps on wall time until each message is due — no timer per message — so
a slow publish delays the rest instead of piling up callbacks. With `publish_clock` the bag
time goes out on /clock (with each message, and every 10 ms while waiting), so nodes with
use_sim_time run on bag time. Each topic is offered the QoS its recorded publishers offered
(`offered_qos_profiles`, see `safefql_recorder`), or reliable depth 10 when the bag has none.
When replaying into a live controller, leave the recorded command topic out with
`exclude_topics` (ROS_CONVENTIONS.md). The node exits (status 0) when the bag is done.

Before the first message the player waits until every topic of `wait_for` (default: every
played topic) has a subscriber — not a fixed delay, which is either too short on a busy
machine (the start of the bag is lost) or wasted — for at most `subscriber_timeout` seconds,
then plays anyway, naming the topics nobody listens to. A played topic counts once its
subscriber has matched the player's publisher; a topic the player does not publish (a
controller's command topic, that a recorder must be recording first) once the ROS graph shows
a subscriber on it. Meanwhile /clock (with
`publish_clock`) holds the bag's start time. Topics and the selections (`topics`,
`exclude_topics`, `wait_for`) are the bag's names; the player publishes them relative to its
namespace (`/boat/odom` under `/robot1` goes to `/robot1/boat/odom`), except the global
topics (/clock, /diagnostics, /tf, /tf_static), so a namespace replays into one robot.

Run: `python -m safefql_ros.player --ros-args -p bag:=bags/run1 -p exclude_topics:=[/boat/cmd_vel]`.
"""
from __future__ import annotations

import itertools
import sys
import threading
import time
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.time import Time
from rosbags.highlevel import AnyReader
from rosgraph_msgs.msg import Clock

from safefql_core.bags import DEFAULT_TYPESTORE, READ_ERRORS, BagError, existing_bag, typestore
from safefql_ros.node_tools import float_range, message_class, optional_array, relative, shutdown, start_node
from safefql_ros.recorder import matching_qos

CLOCK_PERIOD_S = 0.01  # /clock rate while waiting for the next message (publish_clock)
STOP_POLL_S = 0.1  # longest sleep between checks of the stop flag
PUBLISHER_DEPTH = 10  # offered depth when the bag does not record the publisher's own
ACK_TIMEOUT_S = 1.0  # how long the last reliable messages may take to be delivered before exit
GLOBAL_TOPICS = frozenset({"/clock", "/diagnostics", "/tf", "/tf_static"})  # never namespaced


def bag_topic(name: str) -> str:
    """A topic selection as the bag names it (absolute)."""
    return "/" + name.lstrip("/")


class Player(Node):
    """Opens the bag and creates one publisher per played topic; `play` sends the messages."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("safefql_player", **kwargs)
        ro = {"read_only": True}
        bag = self.declare_parameter("bag", "", ParameterDescriptor(
            description="rosbag2 directory to play (mcap or sqlite3)", **ro)).value
        self.rate = self.declare_parameter("rate", 1.0, ParameterDescriptor(
            description="Playback speed factor: 2.0 plays twice as fast", floating_point_range=float_range(1e-3, 1e3),
            **ro)).value
        self.publish_clock = self.declare_parameter("publish_clock", False, ParameterDescriptor(
            description="Publish the bag time on /clock, for nodes with use_sim_time", **ro)).value
        self.declare_parameter("topics", Parameter.Type.STRING_ARRAY, ParameterDescriptor(
            description="Topics to play; unset or empty: every topic in the bag", **ro))
        self.declare_parameter("exclude_topics", Parameter.Type.STRING_ARRAY, ParameterDescriptor(
            description="Topics not to play, e.g. the recorded command topic when a live controller runs", **ro))
        self.declare_parameter("wait_for", Parameter.Type.STRING_ARRAY, ParameterDescriptor(
            description="Played topics that must have a subscriber before the first message; unset: every "
                        "played topic; [''] (one empty name): none", **ro))
        self.subscriber_timeout = self.declare_parameter("subscriber_timeout", 30.0, ParameterDescriptor(
            description="Longest wait (s) for the wait_for topics' subscribers; then play anyway, with a warning",
            floating_point_range=float_range(0.0, 3600.0), **ro)).value
        if not bag:
            raise BagError("parameter 'bag' is not set; pass --ros-args -p bag:=<bag directory>")
        self.path = existing_bag(bag)
        self.reader = AnyReader([self.path], default_typestore=typestore(DEFAULT_TYPESTORE))
        try:
            self.reader.open()
        except READ_ERRORS as exc:
            raise BagError(f"{self.path} cannot be read ({type(exc).__name__}: {exc}); the bag is truncated or "
                           "corrupt: re-copy or re-record it") from None
        try:
            self.publishers_by_topic = self._create_publishers()
        except ValueError:
            self.reader.close()
            raise
        self.clock_pub = self.create_publisher(Clock, "/clock", 10) if self.publish_clock else None
        self.last_clock_ns = -1
        self.anchor = (0, 0.0)  # (bag time ns, monotonic wall time s) of the first message

    def _create_publishers(self) -> dict[str, Any]:
        have = self.reader.topics
        listing = ", ".join(f"{t} ({i.msgtype}, {i.msgcount} msgs)" for t, i in sorted(have.items()))
        requested = [bag_topic(t) for t in optional_array(self, "topics")] or sorted(have)
        excluded = {bag_topic(t) for t in optional_array(self, "exclude_topics")}
        absent = [t for t in requested if t not in have]
        if absent:
            raise BagError(f"topic(s) {absent} not in {self.path}; the bag has: {listing}")
        if excluded - set(have):
            self.get_logger().warning(f"exclude_topics {sorted(excluded - set(have))} are not in the bag anyway")
        selected = [t for t in requested if t not in excluded]
        if not selected:
            raise BagError(f"nothing to play: every topic of {self.path} is excluded; the bag has: {listing}")
        publishers = {}
        for topic in selected:
            info = have[topic]
            if info.msgtype is None:
                types = sorted({c.msgtype for c in info.connections})
                raise BagError(f"topic {topic} has several types in {self.path} ({types}); exclude it")
            offered = [q for c in info.connections for q in getattr(c.ext, "offered_qos_profiles", [])]
            # The graph does not report a publisher's depth (recorded as 0): then the default.
            depth = max([q.depth for q in offered] + [0]) or PUBLISHER_DEPTH
            qos = matching_qos(((q.reliability.name, q.durability.name) for q in offered), depth)
            publishers[topic] = self.create_publisher(message_class(info.msgtype), self._published_name(topic), qos)
        wait_for = optional_array(self, "wait_for")  # [] = unset: every played topic
        self.wait_for = sorted({bag_topic(t) for t in wait_for if t}) if wait_for else sorted(publishers)
        return publishers

    @staticmethod
    def _published_name(topic: str) -> str:
        """The name a bag topic goes out on: relative to the namespace, unless global."""
        return topic if topic in GLOBAL_TOPICS else relative(topic)

    def play(self, stop: threading.Event) -> dict[str, int]:
        """Publish the selected messages in bag order and timing / rate; returns counts per topic.

        Stops early (between messages) when `stop` is set.
        """
        counts = dict.fromkeys(self.publishers_by_topic, 0)
        connections = [c for c in self.reader.connections if c.topic in self.publishers_by_topic]
        total = sum(c.msgcount for c in connections)
        messages = self.reader.messages(connections=connections)
        first = next(messages, None)
        self.get_logger().info(f"playing {total} messages of {self.path} on {sorted(counts)} at rate {self.rate:g} "
                               f"once {self.wait_for or 'nothing'} {'has' if len(self.wait_for) == 1 else 'have'} "
                               "a subscriber")
        if first is None:
            return counts
        self._publish_clock(first[1])
        if not self._wait_for_subscribers(stop):
            return counts
        self.anchor = (first[1], time.monotonic())
        for connection, stamp, data in itertools.chain([first], messages):
            if not self._wait(stamp, stop):
                self.get_logger().warning("stopped before the end of the bag")
                break
            self._publish_clock(stamp)
            self.publishers_by_topic[connection.topic].publish(bytes(data))
            counts[connection.topic] += 1
        for publisher in self.publishers_by_topic.values():
            publisher.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S))
        return counts

    def _unheard(self) -> list[str]:
        """The `wait_for` topics without a subscriber yet (matched, for the played ones)."""
        return [t for t in self.wait_for if (self.publishers_by_topic[t].get_subscription_count() == 0
                                             if t in self.publishers_by_topic
                                             else self.count_subscribers(self._published_name(t)) == 0)]

    def _wait_for_subscribers(self, stop: threading.Event) -> bool:
        """Wait (bounded) until every `wait_for` topic has a matched subscriber; False if stopped."""
        deadline = time.monotonic() + self.subscriber_timeout
        while (unheard := self._unheard()) and time.monotonic() < deadline:
            if stop.wait(STOP_POLL_S / 10):
                return False
        if unheard:
            self.get_logger().warning(f"no subscriber on {unheard} after {self.subscriber_timeout:g} s; playing "
                                      "anyway (is the receiving node running, in this namespace?)")
        return not stop.is_set()

    def _wait(self, stamp: int, stop: threading.Event) -> bool:
        """Sleep until the message stamped `stamp` is due on the wall clock, keeping /clock
        going; False when stopped first."""
        bag_start, wall_start = self.anchor
        due = wall_start + (stamp - bag_start) * 1e-9 / self.rate
        while (remaining := due - time.monotonic()) > 0:
            if self.clock_pub is not None:
                elapsed = max(0.0, time.monotonic() - wall_start)
                self._publish_clock(min(bag_start + round(elapsed * self.rate * 1e9), stamp))
            if stop.wait(min(remaining, CLOCK_PERIOD_S if self.clock_pub is not None else STOP_POLL_S)):
                return False
        return not stop.is_set()

    def _publish_clock(self, stamp: int) -> None:
        """Bag time on /clock, never backwards (several messages can share one stamp)."""
        if self.clock_pub is not None and stamp > self.last_clock_ns:
            self.clock_pub.publish(Clock(clock=Time(nanoseconds=stamp).to_msg()))
            self.last_clock_ns = stamp

    def close(self) -> None:
        self.reader.close()


def main(args: list[str] | None = None) -> int:
    """Console entry point: 0 when the bag was played, 1 with a clear message when it cannot be."""
    node, stop = start_node("safefql_player", Player, args=args)
    if node is None:
        return 1
    logger = node.get_logger()
    try:
        counts = node.play(stop)
        logger.info(f"played {sum(counts.values())} messages ({', '.join(f'{t}: {n}' for t, n in counts.items())})")
    except READ_ERRORS as exc:
        logger.error(f"{node.path} cannot be read ({type(exc).__name__}: {exc}); the bag is truncated or corrupt")
        return 1
    finally:
        node.close()
        shutdown(node)
    return 0


if __name__ == "__main__":
    sys.exit(main())

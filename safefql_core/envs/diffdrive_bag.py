"""Diff-drive behaviour episodes as a rosbag2, through the project's bag writer.

The bag holds what a real robot's recording would: `<ns>/odom` (nav_msgs/Odometry),
`<ns>/scan` (sensor_msgs/LaserScan) and `<ns>/cmd_vel` (geometry_msgs/TwistStamped), filled
by the same code the ROS node publishes with (safefql_core.envs.diffdrive_messages). The
observation is not decided here: config/diffdrive.yaml picks its features from these
messages when the bag is converted, as it would from a recording of the real robot.

Timing follows `safefql_core.bags.episode_messages` (the boat's): one odometry and one scan
per control period, stamped (header and receive time) at the tick; a command stamped at the
tick of the state it answers; episodes one second apart, so the converter splits there. An
episode that collided ends with the state in contact, so its last transition shows it.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rosbags.typesys.store import Typestore

from safefql_core.bags import (
    DEFAULT_TYPESTORE,
    NS,
    SIM_EPISODE_GAP_NS,
    SIM_EPOCH_NS,
    default_message,
    typestore,
    write_bag,
)
from safefql_core.envs import diffdrive
from safefql_core.envs import diffdrive_messages as messages
from safefql_core.envs.diffdrive_behaviour import Episodes


def episode_messages(episodes: Episodes, store: Typestore,
                     namespace: str = messages.NAMESPACE) -> Iterator[tuple[str, int, Any]]:
    """(topic, receive ns, message) of every episode, in time order (messages are reused)."""
    period = round(diffdrive.DT * NS)
    odom_topic, scan_topic, cmd_topic = (messages.topic(n, namespace) for n in (messages.ODOM, messages.SCAN,
                                                                                messages.CMD_VEL))
    odom, scan, cmd = (default_message(store, messages.TYPES[n]) for n in (messages.ODOM, messages.SCAN,
                                                                           messages.CMD_VEL))
    start = SIM_EPOCH_NS
    for e, length in enumerate(episodes.lengths):
        for k in range(int(length) + 1):
            t = start + k * period
            yield odom_topic, t, messages.fill_odometry(odom, episodes.pose[e, k], episodes.velocity[e, k], t)
            yield scan_topic, t, messages.fill_scan(scan, episodes.ranges[e, k], t)
            if k < length:
                yield cmd_topic, t, messages.fill_command(cmd, episodes.commands[e, k], t)
        start += (int(length) + 1) * period + SIM_EPISODE_GAP_NS


def write_episodes(path: str | Path, episodes: Episodes, storage: str = "mcap",
                   namespace: str = messages.NAMESPACE) -> int:
    """Write the episodes as a rosbag2 (see the module docstring); return the message count."""
    store = typestore(DEFAULT_TYPESTORE)
    topics = {messages.topic(n, namespace): messages.TYPES[n] for n in (messages.ODOM, messages.SCAN, messages.CMD_VEL)}
    return write_bag(path, topics, episode_messages(episodes, store, namespace), store, storage)

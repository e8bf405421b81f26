"""rosbag2 read and write through `rosbags` (no ROS installation needed).

Reading extracts, for each topic stream of a task spec, the sample stamps and the spec's
fields — through the same `TaskSpec` code the ROS node uses — ready for
`safefql_core.alignment`. Writing turns simulated episodes into a real rosbag2 with
standard message types, so the bag workflow can be exercised end to end without a robot.
"""
from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw
import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import Nodetype
from rosbags.rosbag2 import ReaderError, StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, TypesysError, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from safefql_core.alignment import TimeSeries
from safefql_core.tasks import NS, Stream, TaskSpec

TYPESTORES = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY, "kilted": Stores.ROS2_KILTED}
DEFAULT_TYPESTORE = "kilted"  # the ROS 2 release of the rclpy wheels this project runs on
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
STORAGE_SUFFIXES = (".mcap", ".db3")  # a bare storage file, read without metadata.yaml
# Simulated bags start at a fixed time, so the same seed gives byte-identical messages, and
# leave a second of silence between episodes: far above any max_age, so the converter
# splits there (alignment.episode_bounds) exactly where the simulator reset.
SIM_EPOCH_NS = 1_700_000_000 * NS
SIM_EPISODE_GAP_NS = 1 * NS
PROGRESS_MIN_MESSAGES = 100_000
# What rosbags (and sqlite3 through apsw) raise on a truncated or corrupt file; OverflowError
# from mcap record lengths scrambled into huge numbers.
READ_ERRORS = (AnyReaderError, ReaderError, apsw.Error, struct.error, UnicodeDecodeError, EOFError, OverflowError)


class BagError(ValueError):
    """A bag that cannot be read or written as asked; the message says what to fix."""


@dataclass
class BagSource:
    """Provenance of one bag's conversion, recorded in the dataset's attributes.

    `partial` lists, per topic, the messages read and the count the bag's metadata lists,
    when they differ and `allow_partial` let the conversion go on; empty for a whole bag.
    """

    path: str
    content_hash: str
    storage: str
    messages: int
    partial: dict[str, list[int]] = field(default_factory=dict)


def content_hash(sources: Sequence[BagSource]) -> str:
    """One bag's content hash, or a hash of the bags' hashes in the order given."""
    if len(sources) == 1:
        return sources[0].content_hash
    return hashlib.sha256("".join(s.content_hash for s in sources).encode()).hexdigest()[:16]


def typestore(name: str, msg_paths: Sequence[str | Path] = ()) -> Typestore:
    """The named release's message definitions, plus custom types from .msg files.

    `msg_paths` are .msg files or folders searched for them; each file must sit at
    `<package>/msg/<Name>.msg`, which names its type `<package>/msg/<Name>` as ROS does.
    """
    if name not in TYPESTORES:
        raise BagError(f"unknown typestore '{name}'; choose one of {sorted(TYPESTORES)}")
    store = get_typestore(TYPESTORES[name])
    types: dict[str, Any] = {}
    for file in _msg_files(msg_paths):
        msgtype = f"{file.parent.parent.name}/msg/{file.stem}"
        try:
            types.update(get_types_from_msg(file.read_text(), msgtype))
        except (TypesysError, UnicodeDecodeError) as exc:
            raise BagError(f"{file} is not a valid .msg definition ({exc}); fix it or leave it out of --msg") from None
    store.register(types)
    return store


def _msg_files(paths: Sequence[str | Path]) -> list[Path]:
    files = []
    for path in map(Path, paths):
        found = sorted(path.rglob("*.msg")) if path.is_dir() else [path] if path.is_file() else []
        if not found:
            raise BagError(f"--msg {path}: no .msg file there; pass .msg files or a folder holding "
                           "<package>/msg/<Name>.msg")
        misplaced = [str(f) for f in found if f.suffix != ".msg" or f.parent.name != "msg"]
        if misplaced:
            raise BagError(f"--msg: cannot tell the type of {misplaced[0]}; a definition must be a file "
                           "<package>/msg/<Name>.msg (e.g. turtlesim/msg/Pose.msg), as in a ROS package")
        files += found
    return files


def bag_paths(paths: Sequence[str | Path]) -> list[Path]:
    """The bags that `--bag` arguments name: rosbag2 directories, bare .mcap/.db3 files, and
    the bags directly inside a folder of them (in name order). Each is converted on its own,
    so no episode is ever joined across two bags."""
    bags: list[Path] = []
    for path in map(Path, paths):
        if _is_bag(path):
            bags.append(path)
        elif path.is_dir() and (inside := sorted(p for p in path.iterdir() if _is_bag(p))):
            bags += inside
        elif not path.exists():
            raise BagError(f"{path} does not exist; pass a rosbag2 directory, a .mcap or .db3 file, "
                           "or a folder of them")
        else:
            raise BagError(f"{path} is neither a bag nor a folder of bags: no metadata.yaml, .mcap or .db3 in it; "
                           "pass the directory that `ros2 bag record` (or offline_train.collect --format bag) "
                           "wrote, a .mcap or .db3 file, or a folder holding those")
    seen: dict[Path, Path] = {}
    for bag in bags:
        if bag.resolve() in seen:
            raise BagError(f"{bag} is named twice (also as {seen[bag.resolve()]}); pass each bag once")
        seen[bag.resolve()] = bag
    return bags


def _is_bag(path: Path) -> bool:
    return (path / "metadata.yaml").is_file() if path.is_dir() else path.suffix in STORAGE_SUFFIXES and path.is_file()


def existing_bag(bag: str | Path) -> Path:
    """A bag to read: a rosbag2 directory (with its metadata.yaml) or a bare .mcap/.db3 file,
    else BagError with the fix."""
    path = Path(bag)
    if not _is_bag(path):
        raise BagError(f"{path} is not a rosbag2 directory (no metadata.yaml) nor a .mcap or .db3 file; pass the "
                       "directory that `ros2 bag record` (or offline_train.collect --format bag, or safefql_recorder) "
                       "wrote, or its .mcap/.db3 file")
    return path


def new_bag(bag: str | Path) -> Path:
    """A bag to write: a directory that does not exist yet, in one that does; else BagError."""
    path = Path(bag)
    if path.exists():
        raise BagError(f"output {path} already exists; a bag is never overwritten: choose a new directory or "
                       "remove the old one")
    if not path.parent.is_dir():
        raise BagError(f"the parent directory of output {path} does not exist; create it first")
    return path


def read_series(bag: str | Path, spec: TaskSpec, store: Typestore | None = None, allow_partial: bool = False,
                progress: bool = True) -> tuple[dict[str, TimeSeries], BagSource]:
    """Stamps and field values of each of the spec's topic streams, in the bag's order, and
    the bag's provenance.

    `bag` is a rosbag2 directory or a bare .mcap/.db3 file. `store` supplies message
    definitions for bags that store none (default: the `DEFAULT_TYPESTORE` release). The
    messages read are checked against the counts the bag's metadata lists: a corrupt file is
    refused, or with `allow_partial` read up to what can be read and marked partial.
    """
    path = existing_bag(bag)
    streams = spec.topic_streams()
    try:
        with AnyReader([path], default_typestore=store or typestore(DEFAULT_TYPESTORE)) as reader:
            _check_topics(reader, path, streams)
            return _read(reader, path, streams, allow_partial, progress)
    except READ_ERRORS as exc:
        raise _corrupt(path, exc) from None


def _corrupt(path: Path, exc: Exception, read: int | None = None) -> BagError:
    where = "" if read is None else f" after {read:,} messages"
    return BagError(f"{path} cannot be read{where} ({type(exc).__name__}: {exc}); the bag is truncated or corrupt "
                    "(e.g. a recording that was killed, or an incomplete copy): re-copy or re-record it"
                    + ("" if read is None else "; --allow-partial converts the messages read before the damage"))


def _check_topics(reader: AnyReader, path: Path, streams: dict[str, Stream]) -> None:
    if not reader.topics or reader.message_count == 0:
        raise BagError(f"{path} is empty (no messages); record the task's topics "
                       f"{sorted({s.topic for s in streams.values()})} into it")
    have = ", ".join(f"{t} ({i.msgtype}, {i.msgcount} msgs)" for t, i in sorted(reader.topics.items()))
    for role, stream in streams.items():
        info = reader.topics.get(stream.topic)
        if info is None:
            raise BagError(f"{role} topic {stream.topic} is not in {path}; the bag has: {have}. "
                           "Fix the topic in the task spec (or remap when recording)")
        if info.msgtype != stream.type:
            raise BagError(f"{role} topic {stream.topic} in {path} has type {info.msgtype}, the task spec "
                           f"says {stream.type}; fix `{'command' if role == 'command' else 'inputs.' + role}.type` "
                           "(and its field paths) in the spec")
        if info.msgcount == 0:
            raise BagError(f"{role} topic {stream.topic} has no messages in {path}; the bag has: {have}")
        missing = _missing_types(reader.typestore, stream.type)
        if missing:
            raise BagError(
                f"{path} stores no definition of {', '.join(missing)} (used by {role} topic {stream.topic}), and "
                "the --typestore release does not have it either (Humble and older bags store none). Pass its "
                f".msg file: --msg path/to/{missing[0]}.msg, or --msg a folder holding <package>/msg/*.msg")


def _missing_types(store: Typestore, msgtype: str) -> list[str]:
    """`msgtype` and every type nested in it that `store` has no definition of."""
    if msgtype not in store.fielddefs:
        return [msgtype]
    nested = []
    fields: Any = store.fielddefs[msgtype][1]  # rosbags' nested field tuples, unpacked by kind below
    for _, (nodetype, detail) in fields:
        if nodetype in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            nodetype, detail = detail[0]
        if nodetype == Nodetype.NAME:
            nested += [t for t in _missing_types(store, detail) if t not in nested]
    return nested


def _read(reader: AnyReader, path: Path, streams: dict[str, Stream], allow_partial: bool,
          progress: bool) -> tuple[dict[str, TimeSeries], BagSource]:
    by_topic: dict[str, list[str]] = {}
    for role, stream in streams.items():
        by_topic.setdefault(stream.topic, []).append(role)
    connections = [c for c in reader.connections if c.topic in by_topic]
    listed = {topic: sum(c.msgcount for c in connections if c.topic == topic) for topic in by_topic}
    stamps: dict[str, list[int]] = {role: [] for role in streams}
    values: dict[str, list[Any]] = {role: [] for role in streams}
    hashes = {topic: hashlib.sha256() for topic in by_topic}
    read = dict.fromkeys(by_topic, 0)
    messages = reader.messages(connections=connections)
    if progress and sum(listed.values()) >= PROGRESS_MIN_MESSAGES:
        from tqdm import tqdm
        messages = tqdm(messages, total=sum(listed.values()), desc=f"read {path.name}", unit="msg", mininterval=1.0)
    try:
        for connection, receive_ns, raw in messages:
            msg = reader.deserialize(raw, connection.msgtype)
            digest = hashes[connection.topic]
            digest.update(receive_ns.to_bytes(8, "little", signed=True))
            digest.update(raw)
            for role in by_topic[connection.topic]:
                stamps[role].append(streams[role].stamp_ns(msg, receive_ns))
                values[role].append(streams[role].read(msg))
            read[connection.topic] += 1
    except READ_ERRORS as exc:
        if not allow_partial or not any(read.values()):
            raise _corrupt(path, exc, sum(read.values())) from None
    partial = {topic: [read[topic], listed[topic]] for topic in by_topic if read[topic] != listed[topic]}
    if partial and not allow_partial:
        counts = "; ".join(f"{t}: {n:,} of {m:,}" for t, (n, m) in partial.items())
        raise BagError(f"{path} is corrupt: its metadata lists {sum(listed.values()):,} messages on the task's "
                       f"topics, {sum(read.values()):,} could be read ({counts}). Re-copy or re-record it; "
                       "--allow-partial converts the messages that were read (the summary says so)")
    series = {role: TimeSeries(np.asarray(stamps[role], dtype=np.int64),
                               np.asarray(values[role], dtype=np.float64).reshape(-1, streams[role].width))
              for role in streams}
    # Per-topic hashes combined in name order: independent of the storage plugin and of how
    # it interleaves topics, so the same recording in mcap or sqlite3 has the same hash.
    content = hashlib.sha256(b"".join(hashes[t].digest() for t in sorted(hashes))).hexdigest()[:16]
    storage = "mcap" if path.suffix == ".mcap" or any(path.glob("*.mcap")) else "sqlite3"
    return series, BagSource(str(path), content, storage, sum(read.values()), partial)


def default_message(store: Typestore, msgtype: str) -> Any:
    """A message of `msgtype` with every field zero / empty: rosbags' classes have no defaults."""
    _, fields = store.fielddefs[msgtype]
    return store.types[msgtype](**{name: _default(store, desc) for name, desc in fields})


def _default(store: Typestore, desc: tuple) -> Any:
    nodetype, detail = desc
    if nodetype == Nodetype.NAME:
        return default_message(store, detail)
    if nodetype == Nodetype.BASE:
        base = detail[0]
        return "" if "string" in base else False if base == "bool" else 0.0 if base.startswith("float") else 0
    element, length = detail
    if element[0] == Nodetype.BASE and "string" not in element[1][0]:
        dtype = {"byte": "uint8", "octet": "uint8", "char": "uint8"}.get(element[1][0], element[1][0])
        return np.zeros(length if nodetype == Nodetype.ARRAY else 0, dtype=dtype)
    return [_default(store, element) for _ in range(length if nodetype == Nodetype.ARRAY else 0)]


def write_bag(path: str | Path, topics: dict[str, str], messages: Iterable[tuple[str, int, Any]],
              store: Typestore, storage: str = "mcap") -> int:
    """Write (topic, receive time ns, message) tuples, in time order, to a new bag; return the count.

    Each message is serialised as soon as it is yielded, so a generator may reuse one
    message object (as `episode_messages` does: a million fresh messages would be slow).
    """
    if storage not in STORAGES:
        raise BagError(f"unknown storage '{storage}'; choose one of {sorted(STORAGES)}")
    count = 0
    try:
        with Writer(Path(path), version=9, storage_plugin=STORAGES[storage]) as writer:
            conns = {topic: writer.add_connection(topic, msgtype, typestore=store) for topic, msgtype in topics.items()}
            for topic, stamp, msg in messages:
                writer.write(conns[topic], stamp, store.serialize_cdr(msg, topics[topic]))
                count += 1
    except WriterError as exc:
        raise BagError(f"cannot write bag {path}: {exc}; choose a new output directory or remove the old one") from None
    return count


def episode_messages(spec: TaskSpec, store: Typestore, states: np.ndarray,
                     actions: np.ndarray) -> Iterator[tuple[str, int, Any]]:
    """State and command messages of simulated episodes on the control grid.

    `states` [E, T+1, obs] holds s_0..s_T of each episode (the last transition needs its
    next state), `actions` [E, T, act] the [-1, 1] actions a_0..a_{T-1}. A command is
    stamped with the tick of the state it answers, as a controller without latency would.
    """
    period = round(spec.control_period * NS)
    episodes, steps = actions.shape[:2]
    state_msg = default_message(store, spec.state.type)
    command_msg = default_message(store, spec.command.type)
    for e in range(episodes):
        start = SIM_EPOCH_NS + e * ((steps + 1) * period + SIM_EPISODE_GAP_NS)
        for k in range(steps + 1):
            t = start + k * period
            spec.fill_state(state_msg, states[e, k])
            spec.state.set_stamp(state_msg, t)
            yield spec.state.topic, t, state_msg
            if k < steps:
                spec.fill_command(command_msg, actions[e, k])
                spec.command.set_stamp(command_msg, t)
                yield spec.command.topic, t, command_msg


def write_episodes(path: str | Path, spec: TaskSpec, states: np.ndarray, actions: np.ndarray,
                   storage: str = "mcap", typestore_name: str = DEFAULT_TYPESTORE) -> int:
    """Write simulated episodes (see `episode_messages`) as a rosbag2; return the message count."""
    store = typestore(typestore_name)
    return write_bag(path, {spec.state.topic: spec.state.type, spec.command.topic: spec.command.type},
                     episode_messages(spec, store, states, actions), store, storage)

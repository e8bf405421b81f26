"""Message features: what a task spec reads from each message, the same code for bags and the node.

`safefql_core.bags` passes messages deserialised by rosbags, the controller node passes
rclpy messages; both have attribute access, and both go through `Stream.read` here, so a
feature means the same number in training and on the robot. Pure Python and numpy: no ROS.

Readers of one message (each gives `width` values):
* `FieldPath` — a numeric field, `pose.pose.position.x` or `data[3]`;
* `Field` — a field as a named feature, optionally an angle wrapped to [-pi, pi);
* `Yaw` — the yaw of a quaternion field (ZYX convention, as tf2's getRPY), e.g. `pose.pose.orientation`;
* `Joint` — a sensor_msgs/JointState entry found by joint name (the order may change per message);
* `Sectors` — a sensor_msgs/LaserScan reduced to N sectors, the closest valid range in each.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from safefql_core.expressions import wrap_angle

STAMP_SOURCES = ("header", "receive")
NS = 1_000_000_000  # stamps are integer nanoseconds, as in ROS 2 and rosbag2


_SEGMENT = re.compile(r"([A-Za-z_]\w*)((?:\[\d+\])*)")


class TaskSpecError(ValueError):
    """A task spec that cannot be used, or a message that does not fit it; says what to fix."""


def check_keys(d: Any, where: str, required: set[str] | frozenset[str],
               optional: set[str] | frozenset[str] = frozenset()) -> None:
    if not isinstance(d, Mapping):
        raise TaskSpecError(f"spec '{where}' must be a mapping, got {type(d).__name__}")
    missing = sorted(required - set(d))
    unknown = sorted(set(d) - required - set(optional))
    if missing:
        raise TaskSpecError(f"spec '{where}' lacks key(s) {missing}; see config/boat.yaml for the format")
    if unknown:
        raise TaskSpecError(f"spec '{where}' has unknown key(s) {unknown}; "
                            f"valid keys: {sorted(required | set(optional))}")


def _field_names(obj: Any) -> list[str]:
    """Field names of a message object: rclpy's class method, or the dataclass fields of rosbags."""
    if hasattr(obj, "get_fields_and_field_types"):
        return list(obj.get_fields_and_field_types())
    names = getattr(obj, "__dataclass_fields__", None) or vars(obj)
    return [n for n in names if not n.startswith("_")]


@dataclass(frozen=True)
class FieldPath:
    """A dotted field path with optional indices, e.g. `pose.pose.position.x` or `data[3]`.

    Parsed on construction, so a malformed path fails when the spec loads.
    """

    path: str
    steps: tuple[tuple[str, tuple[int, ...]], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        steps = []
        for segment in self.path.split("."):
            m = _SEGMENT.fullmatch(segment)
            if m is None:
                raise TaskSpecError(f"field path '{self.path}' is malformed at '{segment}'; "
                                    "write dotted names with optional [index], e.g. pose.pose.position.x or data[3]")
            steps.append((m[1], tuple(int(i) for i in re.findall(r"\d+", m[2]))))
        object.__setattr__(self, "steps", tuple(steps))

    width = 1  # values read per message, as every reader of a stream declares

    def resolve(self, msg: Any) -> Any:
        """The object at the path (a number, or a sub-message such as a quaternion)."""
        obj = msg
        for depth, (name, indices) in enumerate(self.steps):
            obj = self._step(obj, name, indices, depth, msg)
        return obj

    def values(self, msg: Any) -> list[float]:
        return [self.get(msg)]

    def get(self, msg: Any) -> float:
        obj = self.resolve(msg)
        try:
            return float(obj)
        except (TypeError, ValueError):
            raise TaskSpecError(f"field '{self.path}' of {_type_name(msg)} is a {type(obj).__name__}, "
                                "not a number; extend the path to a numeric field") from None

    def set(self, msg: Any, value: float) -> None:
        *parents, (name, indices) = self.steps
        obj = msg
        for depth, (parent, parent_indices) in enumerate(parents):
            obj = self._step(obj, parent, parent_indices, depth, msg)
        if indices:
            container = self._step(obj, name, indices[:-1], len(parents), msg)
            try:
                container[indices[-1]] = float(value)
            except (IndexError, TypeError):
                raise self._index_error(name, indices[-1], container, msg) from None
        else:
            self._step(obj, name, (), len(parents), msg)  # names a missing field before writing it
            setattr(obj, name, float(value))

    def _step(self, obj: Any, name: str, indices: tuple[int, ...], depth: int, msg: Any) -> Any:
        try:
            obj = getattr(obj, name)
        except AttributeError:
            at = ".".join(s for s, _ in self.steps[:depth]) or "the top level"
            raise TaskSpecError(
                f"field '{self.path}' does not exist in {_type_name(msg)}: no '{name}' at {at}, "
                f"which has {_field_names(obj)}; fix the field path in the task spec") from None
        for i in indices:
            try:
                obj = obj[i]
            except (IndexError, TypeError):
                raise self._index_error(name, i, obj, msg) from None
        return obj

    def _index_error(self, name: str, i: int, obj: Any, msg: Any) -> TaskSpecError:
        return TaskSpecError(f"field '{self.path}' of {_type_name(msg)}: index [{i}] is out of range for "
                             f"'{name}' (length {_length(obj)}); fix the index in the task spec")


def _type_name(msg: Any) -> str:
    return getattr(msg, "__msgtype__", None) or type(msg).__name__


def _length(obj: Any) -> str:
    try:
        return str(len(obj))
    except TypeError:
        return f"not a sequence: {type(obj).__name__}"


STREAM_OPTIONS = frozenset({"stamp", "max_age", "frame_id"})  # the optional keys of a topic stream


@dataclass(frozen=True)
class Stream:
    """One topic and the values read from (or written into) its messages.

    `fields` are readers: field paths (the command, the `state:` shorthand), or the message
    features of a named input (`Yaw`, `Joint`, `Sectors`, `Field`), each `width` values.

    `stamp` says which time a sample belongs to: `header` (the message's header.stamp: the
    measurement time, preferred when the type has one) or `receive` (when the bag
    recorded it / the node received it: the only choice for headerless types like Twist).
    `max_age` (seconds, optional key) is how old this stream's sample may be where it is
    used; None: the spec's `max_age`. A command stream's hold is the spec's `command.hold`.
    `frame_id` (optional, header-stamped streams): the coordinate frame (REP 105: `odom`,
    `base_link`) a state must be expressed in — the node refuses a state in another frame —
    and the frame every writer puts into the header (bag writer, simulator, stamped commands).
    """

    topic: str
    type: str
    fields: tuple[Any, ...]
    stamp: str = "receive"
    max_age: float | None = None
    frame_id: str = ""

    @classmethod
    def from_dict(cls, d: Any, where: str, extra: set[str] | frozenset[str] = frozenset()) -> Stream:
        check_keys(d, where, {"topic", "type", "fields"}, STREAM_OPTIONS | set(extra))
        fields = d["fields"]
        if isinstance(fields, str) or not isinstance(fields, list) or not fields:
            raise TaskSpecError(f"spec '{where}.fields' must be a non-empty list of field paths, got {fields!r}")
        return cls.topic_only(d, where, tuple(FieldPath(str(f)) for f in fields))

    @classmethod
    def topic_only(cls, d: Mapping, where: str, fields: tuple[Any, ...] = ()) -> Stream:
        """A stream from the topic keys of `d` (topic, type, stamp, max_age, frame_id) and these readers."""
        if not str(d["topic"]).startswith("/"):
            raise TaskSpecError(f"spec '{where}.topic' must be an absolute topic name like /boat/odom, "
                                f"got {d['topic']!r}")
        if str(d["type"]).count("/") != 2:
            raise TaskSpecError(f"spec '{where}.type' must be a full ROS 2 type like nav_msgs/msg/Odometry, "
                                f"got {d['type']!r}")
        stamp = d.get("stamp", "receive")
        if stamp not in STAMP_SOURCES:
            raise TaskSpecError(f"spec '{where}.stamp' must be one of {list(STAMP_SOURCES)}, got {stamp!r}")
        max_age = positive_seconds(d, "max_age", f"{where}.") if "max_age" in d else None
        frame_id = d.get("frame_id", "")
        if not isinstance(frame_id, str) or (frame_id and stamp != "header"):
            raise TaskSpecError(f"spec '{where}.frame_id' must be a frame name (text) on a stream with "
                                f"`stamp: header` (the frame lives in the header), got {frame_id!r} "
                                f"with stamp {stamp!r}")
        return cls(str(d["topic"]), str(d["type"]), fields, stamp, max_age, frame_id)

    def topic_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"topic": self.topic, "type": self.type, "stamp": self.stamp}
        if self.max_age is not None:
            d["max_age"] = self.max_age
        return {**d, "frame_id": self.frame_id} if self.frame_id else d

    def to_dict(self) -> dict[str, Any]:
        return {**self.topic_dict(), "fields": [f.path for f in self.fields]}

    @property
    def width(self) -> int:
        return sum(f.width for f in self.fields)

    @property
    def names(self) -> list[str]:
        return [f.path for f in self.fields]

    def read(self, msg: Any) -> np.ndarray:
        """The stream's values of `msg`, in spec order, as float64: the one place where a
        message becomes numbers, for the converter (rosbags messages) and the node (rclpy)."""
        return np.array([v for f in self.fields for v in f.values(msg)], dtype=np.float64)

    def write(self, msg: Any, values: np.ndarray) -> Any:
        """Write `values` into the fields of `msg` (in place); returns `msg`."""
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if len(values) != len(self.fields):
            raise TaskSpecError(f"{self.topic}: got {len(values)} values for {len(self.fields)} fields {self.names}")
        for f, v in zip(self.fields, values):
            f.set(msg, v)
        return msg

    def stamp_ns(self, msg: Any, receive_ns: int) -> int:
        """The sample time in nanoseconds, from the header or the receive time."""
        if self.stamp == "receive":
            return receive_ns
        try:
            stamp = msg.header.stamp
        except AttributeError:
            raise TaskSpecError(f"{self.topic}: stamp is 'header' but {_type_name(msg)} has no header; "
                                "set `stamp: receive` for this stream in the task spec") from None
        return int(stamp.sec) * NS + int(stamp.nanosec)

    def set_stamp(self, msg: Any, ns: int) -> None:
        """Set header.stamp, and header.frame_id when the spec names a frame, on a
        header-stamped stream (no-op for `receive`): every writer of the stream's messages
        (bag writer, simulator, controller) labels them the same way."""
        if self.stamp == "header":
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(ns), NS)
            if self.frame_id:
                msg.header.frame_id = self.frame_id


def positive_seconds(d: Mapping, key: str, where: str = "") -> float:
    try:
        value = float(d[key])
    except (TypeError, ValueError):
        raise TaskSpecError(f"spec '{where}{key}' must be a number of seconds, got {d[key]!r}") from None
    if not value > 0 or not np.isfinite(value):
        raise TaskSpecError(f"spec '{where}{key}' must be a positive number of seconds, got {value}")
    return value


# ---- readers of named features ---------------------------------------------------------------
@dataclass(frozen=True)
class Field:
    """A numeric field; with `wrap`, an angle brought to [-pi, pi) (a heading that counts turns)."""

    path: FieldPath
    wrap: bool = False
    width = 1

    def values(self, msg: Any) -> list[float]:
        value = self.path.get(msg)
        return [float(wrap_angle(value)) if self.wrap else value]

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.path.path, **({"wrap": True} if self.wrap else {})}


@dataclass(frozen=True)
class Yaw:
    """Yaw (rotation about z, radians in [-pi, pi]) of the quaternion at `path`."""

    path: FieldPath
    width = 1

    def values(self, msg: Any) -> list[float]:
        q = self.path.resolve(msg)
        try:
            x, y, z, w = (float(getattr(q, c)) for c in "xyzw")
        except (AttributeError, TypeError, ValueError):
            raise TaskSpecError(f"yaw: '{self.path.path}' of {_type_name(msg)} is not a quaternion (x, y, z, w); "
                                "point `yaw:` at one, e.g. pose.pose.orientation") from None
        return [math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))]

    def to_dict(self) -> dict[str, Any]:
        return {"yaw": self.path.path}


JOINT_VALUES = ("position", "velocity", "effort")


@dataclass(frozen=True)
class Joint:
    """One joint's position (velocity, effort) from a sensor_msgs/JointState, found by name:
    publishers need not keep the joints in one order."""

    joint: str
    value: str = "position"
    width = 1

    def values(self, msg: Any) -> list[float]:
        names = list(msg.name)
        if self.joint not in names:
            raise TaskSpecError(f"joint '{self.joint}' is not in this {_type_name(msg)}, which has {names}; "
                                "fix `joint:` in the task spec")
        array = getattr(msg, self.value)
        i = names.index(self.joint)
        if len(array) <= i:
            raise TaskSpecError(f"joint '{self.joint}': this {_type_name(msg)} has {len(array)} {self.value} "
                                f"value(s) for {len(names)} joints; read another `value:` "
                                f"({', '.join(JOINT_VALUES)}) or publish {self.value}")
        return [float(array[i])]

    def to_dict(self) -> dict[str, Any]:
        return {"joint": self.joint, **({"value": self.value} if self.value != "position" else {})}


@dataclass(frozen=True)
class Sectors:
    """A sensor_msgs/LaserScan as `count` sectors of equal beam count, from angle_min to
    angle_max: the closest range in each, read as sensor_msgs and REP 117 document it:
    +inf is "no return within range_max" (counted as range_max), -inf "closer than
    range_min" (counted as range_min), NaN and finite values outside [range_min, range_max]
    are invalid and ignored. A sector without one valid reading is NaN: the state cannot be
    trusted there, so the converter drops the tick and the node sends the stop action."""

    count: int
    width: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "width", self.count)

    def values(self, msg: Any) -> np.ndarray:
        ranges = np.asarray(msg.ranges, dtype=np.float64)
        low, high = float(msg.range_min), float(msg.range_max)
        if len(ranges) < self.count:
            raise TaskSpecError(f"a LaserScan with {len(ranges)} beams cannot make {self.count} sectors; "
                                "use fewer `sectors:`")
        r = np.where(ranges == np.inf, high, np.where(ranges == -np.inf, low, ranges))
        r = np.where(np.isfinite(r) & (r >= low) & (r <= high), r, np.inf)
        closest = np.array([part.min() for part in np.array_split(r, self.count)])
        return np.where(np.isinf(closest), np.nan, closest)

    def to_dict(self) -> dict[str, Any]:
        return {"sectors": self.count}

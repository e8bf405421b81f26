"""Task spec: which message fields make the observation and the action (ARCHITECTURE.md, principle 2).

A task's YAML (`spec:` section of e.g. config/boat.yaml) names the state and command
topics, their message types and field paths, the action bounds, how reward and safety
margin are obtained, the control period and the maximum state age. The bag converter and
the ROS node both go through `TaskSpec`, so the features the policy trains on are exactly
the features it sees on the robot.

This module imports neither rosbags nor rclpy: it works on any message object with
attribute access, which both rosbags' deserialised dataclasses and rclpy messages are.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from safefql_core.envs import boat

STAMP_SOURCES = ("header", "receive")
NS = 1_000_000_000  # stamps are integer nanoseconds, as in ROS 2 and rosbag2


@dataclass(frozen=True)
class ObservationFunction:
    """A reward or margin function and the observation size it is written for: numpy
    broadcasting would let a wrong-sized observation through with a wrong answer."""

    fn: Callable[[np.ndarray], np.ndarray]
    obs_dim: int


# Named functions of the observation a spec may use for reward or margin. A name, not a
# Python import path, so a YAML file can never make the converter run arbitrary code.
FUNCTIONS: dict[str, ObservationFunction] = {
    "boat.reward": ObservationFunction(boat.reward, boat.OBS_DIM),
    "boat.margin": ObservationFunction(boat.margin, boat.OBS_DIM),
}

# Built-in specs: what `fit --bag` and `collect --format bag` use when no YAML is given.
# config/boat.yaml documents the same values (tests/test_tasks.py keeps them in step).
BUILTIN: dict[str, dict[str, Any]] = {
    "boat": {
        "control_period": boat.DT,
        "max_age": 2.5 * boat.DT,
        "state": {"topic": "/boat/odom", "type": "nav_msgs/msg/Odometry", "stamp": "header",
                  "fields": ["pose.pose.position.x", "pose.pose.position.y"]},
        "command": {"topic": "/boat/cmd_vel", "type": "geometry_msgs/msg/Twist", "stamp": "receive",
                    "fields": ["linear.x", "linear.y"], "low": [-1.0, -1.0], "high": [1.0, 1.0]},
        "reward": {"function": "boat.reward"},
        "margin": {"function": "boat.margin"},
    },
}

_SEGMENT = re.compile(r"([A-Za-z_]\w*)((?:\[\d+\])*)")


class TaskSpecError(ValueError):
    """A task spec that cannot be used, or a message that does not fit it; says what to fix."""


def named_function(name: str) -> ObservationFunction:
    """The registered reward/margin function called `name`."""
    try:
        return FUNCTIONS[name]
    except KeyError:
        raise TaskSpecError(f"unknown function '{name}'; registered functions: {sorted(FUNCTIONS)} "
                            "(add yours to safefql_core.tasks.FUNCTIONS, or read the value from a topic)") from None


def _check_keys(d: Any, where: str, required: set[str], optional: set[str] = frozenset()) -> None:
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

    def get(self, msg: Any) -> float:
        obj = msg
        for depth, (name, indices) in enumerate(self.steps):
            obj = self._step(obj, name, indices, depth, msg)
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


@dataclass(frozen=True)
class Stream:
    """One topic and the numeric fields read from (or written into) its messages.

    `stamp` says which time a sample belongs to: `header` (the message's header.stamp: the
    measurement time, preferred when the type has one) or `receive` (when the bag
    recorded it / the node received it: the only choice for headerless types like Twist).
    `max_age` (seconds, optional key) is how old this stream's sample may be where it is
    used; None: the spec's `max_age`. A command stream's hold is the spec's `command.hold`.
    """

    topic: str
    type: str
    fields: tuple[FieldPath, ...]
    stamp: str = "receive"
    max_age: float | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str, extra: set[str] = frozenset()) -> Stream:
        _check_keys(d, where, {"topic", "type", "fields"}, {"stamp", "max_age"} | set(extra))
        fields = d["fields"]
        if isinstance(fields, str) or not isinstance(fields, list) or not fields:
            raise TaskSpecError(f"spec '{where}.fields' must be a non-empty list of field paths, got {fields!r}")
        if not str(d["topic"]).startswith("/"):
            raise TaskSpecError(f"spec '{where}.topic' must be an absolute topic name like /boat/odom, "
                                f"got {d['topic']!r}")
        if str(d["type"]).count("/") != 2:
            raise TaskSpecError(f"spec '{where}.type' must be a full ROS 2 type like nav_msgs/msg/Odometry, "
                                f"got {d['type']!r}")
        stamp = d.get("stamp", "receive")
        if stamp not in STAMP_SOURCES:
            raise TaskSpecError(f"spec '{where}.stamp' must be one of {list(STAMP_SOURCES)}, got {stamp!r}")
        max_age = _positive(d, "max_age", f"{where}.") if "max_age" in d else None
        return cls(str(d["topic"]), str(d["type"]), tuple(FieldPath(str(f)) for f in fields), stamp, max_age)

    def to_dict(self) -> dict[str, Any]:
        d = {"topic": self.topic, "type": self.type, "stamp": self.stamp, "fields": [f.path for f in self.fields]}
        return d if self.max_age is None else {**d, "max_age": self.max_age}

    @property
    def names(self) -> list[str]:
        return [f.path for f in self.fields]

    def read(self, msg: Any) -> np.ndarray:
        """The stream's fields of `msg`, in spec order, as float64."""
        return np.array([f.get(msg) for f in self.fields], dtype=np.float64)

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
        """Set header.stamp when the stream is header-stamped (no-op for `receive`)."""
        if self.stamp == "header":
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(ns), NS)


@dataclass(frozen=True)
class Signal:
    """Reward or safety margin: a named function of the observation, or one field of a topic."""

    function: str | None = None
    stream: Stream | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Signal:
        if isinstance(d, Mapping) and "function" in d:
            _check_keys(d, where, {"function"})
            named_function(d["function"])  # unknown names fail at load time
            return cls(function=str(d["function"]))
        if isinstance(d, Mapping) and "field" in d:
            _check_keys(d, where, {"topic", "type", "field"}, {"stamp", "max_age"})
            return cls(stream=Stream.from_dict({**{k: v for k, v in d.items() if k != "field"},
                                                "fields": [d["field"]]}, where))
        raise TaskSpecError(f"spec '{where}' must be {{function: <name>}} (one of {sorted(FUNCTIONS)}) "
                            "or {topic: ..., type: ..., field: ...}")

    def to_dict(self) -> dict[str, Any]:
        if self.function is not None:
            return {"function": self.function}
        d = self.stream.to_dict()
        d["field"] = d.pop("fields")[0]
        return d

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        if self.function is None:
            raise TaskSpecError(f"this signal is read from topic {self.stream.topic}, not computed from the "
                                "observation; align the topic instead (offline_train.convert does)")
        return np.asarray(named_function(self.function).fn(observations), dtype=np.float64)


@dataclass(frozen=True)
class TaskSpec:
    """The ROS interface of a task: state and command topics, action scaling, reward and
    margin, timing. `observation`/`action` turn messages into vectors, `fill_state`/
    `fill_command` turn vectors into messages the caller constructed."""

    name: str
    control_period: float
    max_age: float
    state: Stream
    command: Stream
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    reward: Signal
    margin: Signal
    hold: float | None = None  # the command's hold (`command.hold`); None: max_age

    @classmethod
    def load(cls, path: str | Path) -> TaskSpec:
        """Read the `spec:` section of a task YAML (its `task:` key names the task)."""
        path = Path(path)
        if not path.is_file():
            raise TaskSpecError(f"task config {path} not found; see config/boat.yaml for the format")
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise TaskSpecError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(doc, Mapping) or "spec" not in doc:
            raise TaskSpecError(f"{path} has no `spec:` section (topics, fields, bounds, period); "
                                "copy the one in config/boat.yaml and adapt it")
        return cls.from_dict(doc["spec"], name=str(doc.get("task", path.stem)))

    @classmethod
    def builtin(cls, name: str) -> TaskSpec:
        if name not in BUILTIN:
            raise TaskSpecError(f"no built-in spec for task '{name}' (have {sorted(BUILTIN)}); pass --config")
        return cls.from_dict(BUILTIN[name], name=name)

    @classmethod
    def of_task(cls, task: Mapping[str, Any]) -> TaskSpec:
        """The spec a bundle's (or run's) `task` entry records: the exact spec `convert` used.

        Bundles exported before the spec travelled with the model record only a task name;
        for the boat that is its built-in spec, for any other task nothing is known.
        """
        if task.get("spec"):
            return cls.from_dict(task["spec"], name=task["name"])
        if task["name"] not in BUILTIN:
            raise TaskSpecError(
                f"the bundle records no task spec, and task '{task['name']}' has no built-in one: it was "
                "trained on a dataset without ROS topics (a simulator's HDF5, a DSRL file). Train from a bag "
                "(python -m offline_train.fit --bag BAG --config TASK.yaml) to get a bundle a robot can run")
        return cls.builtin(task["name"])

    def interface(self) -> dict[str, Any]:
        """What the policy depends on: the observation's and action's definitions, bounds and
        period. Topic names, stamps, ages, reward and margin may differ between deployments."""
        d = self.to_dict()
        return {"task": self.name, "control_period": d["control_period"],
                "state": {k: d["state"][k] for k in ("type", "fields")},
                "command": {k: d["command"][k] for k in ("type", "fields", "low", "high")}}

    def check_matches(self, other: TaskSpec, mine: str, theirs: str) -> None:
        """Refuse `other` as a stand-in for this spec unless it has the same interface; the
        error shows both sides of every difference."""
        a, b = _flatten(self.interface()), _flatten(other.interface())
        diffs = [f"{key}: {mine} {a.get(key)!r}, {theirs} {b.get(key)!r}"
                 for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]
        if diffs:
            raise TaskSpecError(f"{theirs} does not match the spec {mine} was trained with: " + "; ".join(diffs)
                                + f". Use the spec {mine} records (leave {theirs} out), or only change topic "
                                "names, stamps, ages, reward or margin in it")

    @classmethod
    def from_dict(cls, d: Any, name: str) -> TaskSpec:
        _check_keys(d, "spec", {"control_period", "max_age", "state", "command", "reward", "margin"})
        period, max_age = _positive(d, "control_period"), _positive(d, "max_age")
        if max_age < period:
            raise TaskSpecError(f"spec max_age ({max_age}) is shorter than control_period ({period}): a state "
                                "sent every period would be stale between ticks; use at least one period")
        command = Stream.from_dict(d["command"], "command", extra={"low", "high", "hold"})
        if command.max_age is not None:
            raise TaskSpecError("spec 'command.max_age' is not a key: a command's age limit is its `hold` "
                                "(how long a command stays in force), e.g. command: {hold: 0.5, ...}")
        hold = _positive(d["command"], "hold", "command.") if "hold" in d["command"] else None
        low, high = (_bounds(d["command"], key, len(command.fields)) for key in ("low", "high"))
        empty = [f"{n}: low {lo} >= high {hi}" for n, lo, hi in zip(command.names, low, high) if lo >= hi]
        if empty:
            raise TaskSpecError(f"spec command bounds are empty: {empty}; every low must be below its high")
        spec = cls(name, period, max_age, Stream.from_dict(d["state"], "state"), command,
                   low, high, Signal.from_dict(d["reward"], "reward"), Signal.from_dict(d["margin"], "margin"), hold)
        spec._check_functions()
        for role in spec.topic_streams():
            if spec.max_age_of(role) < period:
                key = "command.hold" if role == "command" else f"{role}.max_age"
                raise TaskSpecError(f"spec {key} ({spec.max_age_of(role)}) is shorter than control_period "
                                    f"({period}): a sample sent every period would be stale between ticks; "
                                    "use at least one period")
        return spec

    def max_age_of(self, role: str) -> float:
        """How old the sample of topic stream `role` may be where it is used (seconds): the
        stream's own `max_age`, the command's `hold`, or else the spec's `max_age`."""
        if role == "command":
            return self.hold if self.hold is not None else self.max_age
        own = self.topic_streams()[role].max_age
        return own if own is not None else self.max_age

    def _check_functions(self) -> None:
        for role, signal in (("reward", self.reward), ("margin", self.margin)):
            if signal.function is not None and named_function(signal.function).obs_dim != self.obs_dim:
                raise TaskSpecError(
                    f"spec {role} function '{signal.function}' is written for a "
                    f"{named_function(signal.function).obs_dim}-field observation, but the state has "
                    f"{self.obs_dim} field(s) {self.state.names}; match the fields or read {role} from a topic")

    def to_dict(self) -> dict[str, Any]:
        """The `spec:` mapping (from_dict's inverse): stored in datasets and bundles."""
        return {"control_period": self.control_period, "max_age": self.max_age,
                "state": self.state.to_dict(),
                "command": {**self.command.to_dict(), "low": list(self.action_low), "high": list(self.action_high),
                            **({} if self.hold is None else {"hold": self.hold})},
                "reward": self.reward.to_dict(), "margin": self.margin.to_dict()}

    @property
    def obs_dim(self) -> int:
        return len(self.state.fields)

    @property
    def act_dim(self) -> int:
        return len(self.command.fields)

    def topic_streams(self) -> dict[str, Stream]:
        """Every stream read from a topic, by role: state, command, and reward/margin when
        they come from topics rather than functions."""
        streams = {"state": self.state, "command": self.command}
        for role, signal in (("reward", self.reward), ("margin", self.margin)):
            if signal.stream is not None:
                streams[role] = signal.stream
        return streams

    def scale_action(self, raw: np.ndarray) -> np.ndarray:
        """Command units -> [-1, 1] (not clipped: the caller decides what out-of-range means)."""
        low, high = np.asarray(self.action_low), np.asarray(self.action_high)
        return 2.0 * (np.asarray(raw, dtype=np.float64) - low) / (high - low) - 1.0

    def unscale_action(self, action: np.ndarray) -> np.ndarray:
        """[-1, 1] -> command units, clipped to the bounds: nothing outside them is ever sent."""
        low, high = np.asarray(self.action_low), np.asarray(self.action_high)
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        return low + (a + 1.0) * 0.5 * (high - low)

    def observation(self, msg: Any) -> np.ndarray:
        """The observation vector of a state message."""
        return self.state.read(msg)

    def action(self, msg: Any) -> np.ndarray:
        """The action of a command message, scaled to [-1, 1]."""
        return self.scale_action(self.command.read(msg))

    def fill_state(self, msg: Any, observation: np.ndarray) -> Any:
        """Write an observation into a state message the caller constructed; returns it."""
        return self.state.write(msg, observation)

    def fill_command(self, msg: Any, action: np.ndarray) -> Any:
        """Write a [-1, 1] action, unscaled to command units, into a command message.

        Refuses non-finite actions: a NaN must never reach an actuator.
        """
        action = np.asarray(action, dtype=np.float64)
        if not np.isfinite(action).all():
            raise TaskSpecError(f"refusing to write a non-finite action {action.tolist()} to {self.command.topic}")
        return self.command.write(msg, self.unscale_action(action))


def resolve_spec(bundle_meta: Mapping[str, Any], given: TaskSpec | None = None,
                 given_as: str = "--config") -> TaskSpec:
    """The spec to deploy a bundle with (`bundle_meta`: its bundle.json): the one it records, or
    `given` (a --config, a node parameter) when that matches it, e.g. the same robot under
    other topic names. Either must fit the networks' input and output sizes."""
    task = bundle_meta["task"]
    spec = given or TaskSpec.of_task(task)
    if given is not None and (task.get("spec") or task["name"] in BUILTIN):
        TaskSpec.of_task(task).check_matches(given, "the bundle", given_as)
    sizes = (bundle_meta["obs_dim"], bundle_meta["act_dim"])
    if (spec.obs_dim, spec.act_dim) != sizes:
        raise TaskSpecError(f"{given_as if given else 'the spec'} reads {spec.obs_dim} observation values "
                            f"{spec.state.names} and writes {spec.act_dim} action values, but the bundle's "
                            f"networks take {sizes[0]} and give {sizes[1]}; use the spec it was trained with")
    return spec


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _positive(d: Mapping, key: str, where: str = "") -> float:
    try:
        value = float(d[key])
    except (TypeError, ValueError):
        raise TaskSpecError(f"spec '{where}{key}' must be a number of seconds, got {d[key]!r}") from None
    if not value > 0 or not np.isfinite(value):
        raise TaskSpecError(f"spec '{where}{key}' must be a positive number of seconds, got {value}")
    return value


def _bounds(d: Mapping, key: str, n: int) -> tuple[float, ...]:
    value = d.get(key)
    if not isinstance(value, list) or len(value) != n:
        raise TaskSpecError(f"spec 'command.{key}' must be a list of {n} numbers (one per command field), "
                            f"got {value!r}")
    try:
        bounds = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise TaskSpecError(f"spec 'command.{key}' must hold numbers, got {value!r}") from None
    if not np.isfinite(bounds).all():
        raise TaskSpecError(f"spec 'command.{key}' must be finite, got {value!r}")
    return bounds

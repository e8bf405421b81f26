"""Task spec: what a robot's topics mean to the policy (ARCHITECTURE.md, principles 2 and 5).

A task's YAML (`spec:` section; every key in docs/BRING_YOUR_OWN_ROBOT.md) names the state
inputs (topics, each with its stamp source and maximum age), the named features read from
them (features.py) or computed from each other, ready-made terms (terms.py), the command
and its bounds, reward and safety margin as expressions (expressions.py), the control period
and the ages. The bag converter and the ROS node both go through `TaskSpec`, so the features
the policy trains on are exactly the features it sees on the robot; the spec travels in the
dataset and the bundle, and a deployment may only rename what the policy does not depend on.

This module imports neither rosbags nor rclpy: it works on any message object with
attribute access, which both rosbags' deserialised dataclasses and rclpy messages are.
"""
from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from safefql_core.expressions import CONSTANTS as EXPRESSION_CONSTANTS
from safefql_core.expressions import FUNCTIONS as EXPRESSION_FUNCTIONS
from safefql_core.expressions import Expression, ExpressionError
from safefql_core.features import (  # noqa: F401 (re-exported: the spec's message vocabulary)
    JOINT_VALUES,
    NS,
    STAMP_SOURCES,
    STREAM_OPTIONS,
    Field,
    FieldPath,
    Joint,
    Sectors,
    Stream,
    TaskSpecError,
    Yaw,
    check_keys,
    positive_seconds,
)
from safefql_core.terms import Term, TermError, build_term

# The task spec's public API (the message vocabulary re-exported from features is public there).
__all__ = [
    "BUILTIN", "FUNCTIONS", "TASK_CONFIGS", "FieldPath", "NS", "Stream", "TaskSpec", "TaskSpecError",
    "named_function", "resolve_spec", "simulator_mismatch",
]

ENCODINGS = ("angle", "sincos")
_NAME = re.compile(r"[A-Za-z_]\w*")
FUNCTIONS_AND_CONSTANTS = set(EXPRESSION_FUNCTIONS) | set(EXPRESSION_CONSTANTS)  # not usable as names


@dataclass(frozen=True)
class ObservationFunction:
    """A reward or margin function and the observation size it is written for: numpy
    broadcasting would let a wrong-sized observation through with a wrong answer."""

    fn: Callable[[np.ndarray], np.ndarray]
    obs_dim: int


# Named functions of the observation a spec may use for reward or margin. A name, not a
# Python import path, so a YAML file can never make the converter run arbitrary code. Each
# names its module and attribute, imported when a spec uses it: the deployed node, whose spec
# is written in expressions, loads no simulator code.
FUNCTIONS: dict[str, tuple[str, str]] = {
    "boat.reward": ("safefql_core.envs.boat", "reward"),
    "boat.margin": ("safefql_core.envs.boat", "margin"),
}

# The task YAMLs that ship with the package: `task_configs` is a link to the repository's
# config/ (installed as package data), so the built-in specs are read from the files a user
# copies and edits, and each value is written once.
TASK_CONFIGS = Path(__file__).parent / "task_configs"


def _spec_section(task: str) -> dict[str, Any]:
    """The `spec:` section of the package's config/<task>.yaml."""
    return yaml.safe_load((TASK_CONFIGS / f"{task}.yaml").read_text())["spec"]


# Built-in specs: what `fit --bag` and `collect --format bag` use when no YAML is given, read
# from config/boat.yaml. The boat is written like any robot: named features, two terms, reward
# and margin over them; tests/test_tasks.py checks them against the simulator (its period, the
# registered boat.reward / boat.margin give the same numbers).
BUILTIN: dict[str, dict[str, Any]] = {"boat": _spec_section("boat")}


def named_function(name: str) -> ObservationFunction:
    """The registered reward/margin function called `name`, with its module's OBS_DIM."""
    try:
        module_name, attribute = FUNCTIONS[name]
    except KeyError:
        raise TaskSpecError(f"unknown function '{name}'; registered functions: {sorted(FUNCTIONS)}. Write reward "
                            "and margin as expressions over named features instead "
                            "(docs/BRING_YOUR_OWN_ROBOT.md)") from None
    module = importlib.import_module(module_name)
    return ObservationFunction(getattr(module, attribute), module.OBS_DIM)


@dataclass(frozen=True)
class Signal:
    """Reward or safety margin: an expression over the named features and terms (the usual
    way), or a registered function of the observation vector (older specs)."""

    expression: Expression | None = None
    function: str | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Signal:
        if isinstance(d, Mapping) and "function" in d:
            check_keys(d, where, {"function"})
            named_function(d["function"])  # unknown names fail at load time
            return cls(function=str(d["function"]))
        try:
            return cls(expression=Expression.parse(d))
        except ExpressionError as exc:
            raise TaskSpecError(f"spec '{where}': {exc}. Write an expression over the feature and term names, "
                                "e.g. \"-goal_distance\" or \"0.3 - min(scan)\"; or {function: <name>} (one of "
                                f"{sorted(FUNCTIONS)}); or {{topic: ..., type: ..., field: ...}}") from None

    def to_dict(self) -> str | dict[str, Any]:
        return self.expression.text if self.expression is not None else {"function": self.function}


@dataclass(frozen=True)
class Feature:
    """A named feature: read from a message of `input` by `reader`, or computed by `expr` from
    the features before it. `observe` puts it into the observation (false: only for reward
    and margin); `encode: sincos` observes an angle as its sine and cosine (no jump at pi)."""

    name: str
    input: str | None = None
    reader: Any = None
    expr: Expression | None = None
    observe: bool = True
    encode: str = "angle"

    @property
    def expression(self) -> Expression:
        """The expression of a computed feature (one without `input`)."""
        if self.expr is None:
            raise TaskSpecError(f"feature {self.name} is read from input {self.input!r}, not computed")
        return self.expr

    @property
    def columns(self) -> list[str]:
        """Its names in the observation vector (and as single values in expressions)."""
        if isinstance(self.reader, Sectors):
            return [f"{self.name}_{i}" for i in range(self.reader.count)]
        return [f"{self.name}_sin", f"{self.name}_cos"] if self.encode == "sincos" else [self.name]

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Feature:
        kinds = ("field", "yaw", "joint", "sectors", "expr")
        check_keys(d, where, {"name"}, {"input", "observe", "encode", "wrap", "value", *kinds})
        name, given = d["name"], [k for k in kinds if k in d]
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in FUNCTIONS_AND_CONSTANTS:
            raise TaskSpecError(f"spec '{where}.name' must be an identifier (letters, digits, _) that is not a "
                                f"function name, to be used in expressions; got {name!r}")
        where = f"{where} ({name})"
        if len(given) != 1:
            raise TaskSpecError(f"spec '{where}' needs exactly one of {list(kinds)}, got {given or 'none'}")
        kind = given[0]
        if (kind == "expr") == ("input" in d):
            raise TaskSpecError(f"spec '{where}': " + ("an expr feature is computed from other features; drop "
                                "`input:`" if kind == "expr" else f"a {kind} feature needs `input:`, the name of "
                                "one of the spec's inputs"))
        allowed = {"field": {"wrap", "encode"}, "yaw": {"encode"}, "joint": {"value"}, "sectors": set(),
                   "expr": {"wrap", "encode"}}[kind]
        extra = sorted({"encode", "wrap", "value"} & set(d) - allowed)
        if extra:
            raise TaskSpecError(f"spec '{where}': {extra} do not apply to a {kind} feature")
        encode = d.get("encode", "angle")
        if encode not in ENCODINGS:
            raise TaskSpecError(f"spec '{where}.encode' must be one of {list(ENCODINGS)}, got {encode!r}")
        observe = d.get("observe", True)
        if not isinstance(observe, bool):
            raise TaskSpecError(f"spec '{where}.observe' must be true or false, got {observe!r}")
        if kind == "expr":
            try:
                expr = Expression.parse(f"wrap({d['expr']})" if d.get("wrap") else d["expr"])
            except ExpressionError as exc:
                raise TaskSpecError(f"spec '{where}.expr': {exc}") from None
            return cls(name, expr=expr, observe=observe, encode=encode)
        return cls(name, str(d["input"]), _reader(d, kind, where), observe=observe, encode=encode)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.expr is not None:
            d["expr"] = self.expr.text
        else:
            d.update(input=self.input, **self.reader.to_dict())
        return {**d, **({} if self.observe else {"observe": False}),
                **({"encode": self.encode} if self.encode != "angle" else {})}


def _reader(d: Mapping, kind: str, where: str) -> Any:
    if kind == "field":
        return Field(FieldPath(str(d["field"])), bool(d.get("wrap", False)))
    if kind == "yaw":
        return Yaw(FieldPath(str(d["yaw"])))
    if kind == "joint":
        value = d.get("value", "position")
        if value not in JOINT_VALUES or not isinstance(d["joint"], str):
            raise TaskSpecError(f"spec '{where}': joint must be a joint name and value one of {list(JOINT_VALUES)}")
        return Joint(d["joint"], value)
    count = d["sectors"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise TaskSpecError(f"spec '{where}.sectors' must be a positive whole number, got {count!r}")
    return Sectors(count)


@dataclass(frozen=True)
class TaskSpec:
    """The ROS interface of a task: state inputs and their named features, the command,
    action scaling, terms, reward and margin, timing.

    One code path from messages to numbers, for the converter and the node alike: each
    input's `Stream.read(msg)` gives that message's raw values (features.py), and
    `observations(raw)` / `reward_margin(raw)` turn the aligned raw values of all inputs
    [N, width] into the observation [N, obs] and the signals [N] (the node calls them with
    N = 1).
    """

    name: str
    control_period: float
    max_age: float
    inputs: tuple[tuple[str, Stream], ...]
    features: tuple[Feature, ...]
    terms: tuple[tuple[str, Term], ...]
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

    def differences(self, other: TaskSpec, mine: str, theirs: str) -> list[str]:
        """Every difference between the two interfaces, both sides shown."""
        a, b = _flatten(self.interface()), _flatten(other.interface())
        return [f"{key}: {mine} {a.get(key)!r}, {theirs} {b.get(key)!r}"
                for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]

    def check_matches(self, other: TaskSpec, mine: str, theirs: str) -> None:
        """Refuse `other` as a stand-in for this spec unless it has the same interface; the
        error shows both sides of every difference."""
        diffs = self.differences(other, mine, theirs)
        if diffs:
            raise TaskSpecError(f"{theirs} does not match the spec {mine} was trained with: " + "; ".join(diffs)
                                + f". Use the spec {mine} records (leave {theirs} out), or only change topic "
                                "names, stamps, ages, reward or margin in it")

    @classmethod
    def from_dict(cls, d: Any, name: str) -> TaskSpec:
        d = _canonical(d)
        check_keys(d, "spec", {"control_period", "max_age", "inputs", "features", "command", "reward", "margin"},
                    {"terms"})
        period, max_age = positive_seconds(d, "control_period"), positive_seconds(d, "max_age")
        if max_age < period:
            raise TaskSpecError(f"spec max_age ({max_age}) is shorter than control_period ({period}): a state "
                                "sent every period would be stale between ticks; use at least one period")
        features = _features(d["features"])
        inputs = _inputs(d["inputs"], features)
        terms = _terms(d.get("terms") or {})
        command = Stream.from_dict(d["command"], "command", extra={"low", "high", "hold"})
        if command.max_age is not None:
            raise TaskSpecError("spec 'command.max_age' is not a key: a command's age limit is its `hold` "
                                "(how long a command stays in force), e.g. command: {hold: 0.5, ...}")
        hold = positive_seconds(d["command"], "hold", "command.") if "hold" in d["command"] else None
        low, high = (_bounds(d["command"], key, len(command.fields)) for key in ("low", "high"))
        empty = [f"{n}: low {lo} >= high {hi}" for n, lo, hi in zip(command.names, low, high) if lo >= hi]
        if empty:
            raise TaskSpecError(f"spec command bounds are empty: {empty}; every low must be below its high")
        spec = cls(name, period, max_age, inputs, features, terms, command, low, high,
                   Signal.from_dict(d["reward"], "reward"), Signal.from_dict(d["margin"], "margin"), hold)
        spec._check_names()
        for role in spec.topic_streams():
            if spec.max_age_of(role) < period:
                key = "command.hold" if role == "command" else f"inputs.{role}.max_age"
                raise TaskSpecError(f"spec {key} ({spec.max_age_of(role)}) is shorter than control_period "
                                    f"({period}): a sample sent every period would be stale between ticks; "
                                    "use at least one period")
        return spec

    def _check_names(self) -> None:
        """Every name resolves, and every expression gives one value per tick: evaluated once
        on zeros, so a typo fails when the spec loads, not after an hour of conversion."""
        seen: set[str] = set()
        for f in self.features:
            clash = sorted({f.name, *f.columns} & seen)
            if clash:
                raise TaskSpecError(f"spec features: the name(s) {clash} are used twice; "
                                    "give each feature its own name")
            unknown = sorted(f.expr.names - seen) if f.expr is not None else []
            if unknown:
                raise TaskSpecError(f"spec feature '{f.name}': its expr uses {unknown}, which no feature before it "
                                    f"defines (known: {sorted(seen)}); an expr may only use earlier features")
            seen |= {f.name, *f.columns}
        for name, term in self.terms:
            if name in seen:
                raise TaskSpecError(f"spec term '{name}' has the name of a feature; rename one of them")
            unknown = sorted(set(term.inputs) - seen)
            if unknown:
                raise TaskSpecError(f"spec term '{name}' reads {unknown}, which no feature defines "
                                    f"(known: {sorted(seen)})")
        if not self.observation_names:
            raise TaskSpecError("spec features: nothing is observed (every feature has observe: false)")
        zeros = {name: np.zeros((2, stream.width)) for name, stream in self.inputs}
        values = self.values(zeros)
        for role, signal in (("reward", self.reward), ("margin", self.margin)):
            if signal.function is not None:
                if named_function(signal.function).obs_dim != self.obs_dim:
                    raise TaskSpecError(
                        f"spec {role} function '{signal.function}' is written for a "
                        f"{named_function(signal.function).obs_dim}-field observation, but the spec observes "
                        f"{self.obs_dim} value(s) {self.observation_names}; write {role} as an expression instead")
            else:
                _evaluate(signal.expression, values, role)

    def values(self, raw: Mapping[str, np.ndarray], terms: bool = True) -> dict[str, np.ndarray]:
        """Every feature, column and (with `terms`) term by name, from each input's raw values
        [N, width] (`Stream.read` of its messages, aligned). Features of inputs missing from
        `raw` and what depends on them are left out (the next state needs no reward inputs)."""
        values: dict[str, np.ndarray] = {}
        offsets = {name: 0 for name, _ in self.inputs}
        for f in self.features:
            if f.input is not None:  # read from a message (else computed by f.expr)
                start = offsets[f.input]
                offsets[f.input] += f.reader.width
                if f.input not in raw:
                    continue
                block = np.asarray(raw[f.input], dtype=np.float64)[:, start:start + f.reader.width]
                values[f.name] = block if isinstance(f.reader, Sectors) else block[:, 0]
            elif f.expression.names <= set(values):
                values[f.name] = _evaluate(f.expression, values, f"feature {f.name}")
            else:
                continue
            if isinstance(f.reader, Sectors):
                values.update({c: values[f.name][:, i] for i, c in enumerate(f.columns)})
            elif f.encode == "sincos":
                values[f"{f.name}_sin"], values[f"{f.name}_cos"] = np.sin(values[f.name]), np.cos(values[f.name])
        for name, term in self.terms if terms else ():
            if set(term.inputs) <= set(values):
                values[name] = _evaluate(term, values, f"term {name}")
        return values

    def observations(self, raw: Mapping[str, np.ndarray]) -> np.ndarray:
        """The observation vectors [N, obs_dim] of the state inputs' raw values (the node calls
        this once per state message: no terms are computed)."""
        values = self.values(raw, terms=False)
        return np.column_stack([values[c] for c in self.observation_names])

    def signals(self, raw: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(reward [N], margin [N]) of every input's raw values; non-finite values are refused
        with the tick they first occur at."""
        values = self.values(raw)
        observations = np.column_stack([values[c] for c in self.observation_names])
        out = []
        for role, signal in (("reward", self.reward), ("margin", self.margin)):
            if signal.function is not None:
                value = np.asarray(named_function(signal.function).fn(observations), dtype=np.float64)
            else:
                value = _evaluate(signal.expression, values, role)
            bad = np.flatnonzero(~np.isfinite(value))
            if len(bad):
                raise TaskSpecError(f"{role} '{signal.to_dict()}' is not finite at {len(bad):,} tick(s), first at "
                                    f"tick {bad[0]} where the features are "
                                    f"{ {k: float(v[bad[0]]) for k, v in values.items() if np.ndim(v) == 1} }; "
                                    "guard the expression (e.g. max(x, 1e-6) under a log or sqrt)")
            out.append(value)
        return out[0], out[1]

    @property
    def observation_names(self) -> list[str]:
        return [c for f in self.features if f.observe for c in f.columns]

    def state_inputs(self) -> list[str]:
        """Inputs the observation needs (directly or through expr features), in spec order;
        the others only feed reward or margin and are aligned at tick k alone."""
        needs: dict[str, set[str]] = {}
        for f in self.features:
            needs[f.name] = {f.input} if f.input is not None else set().union(
                *(needs.get(n, set()) for n in f.expression.names))
        used = set().union(*(needs[f.name] for f in self.features if f.observe))
        return [name for name, _ in self.inputs if name in used]

    def interface(self) -> dict[str, Any]:
        """What the policy depends on: the observation's and action's definitions, bounds and
        period. Names, topic names, stamps, ages, terms, reward and margin may differ between
        deployments (the same robot in a namespace, a short-form spec of the same fields)."""
        d, states = self.to_dict(), self.state_inputs()
        inputs = dict(self.inputs)
        return {"task": self.name, "control_period": d["control_period"],
                "inputs": [inputs[name].type for name in states],
                "features": [{k: v for k, v in f.to_dict().items() if k not in ("name", "input")}
                             | ({"input": states.index(f.input)} if f.input is not None else {})
                             for f in self.features if f.input is None or f.input in states],
                "command": {k: d["command"][k] for k in ("type", "fields", "low", "high")}}
    def max_age_of(self, role: str) -> float:
        """How old the sample of topic stream `role` may be where it is used (seconds): the
        stream's own `max_age`, the command's `hold`, or else the spec's `max_age`."""
        if role == "command":
            return self.hold if self.hold is not None else self.max_age
        own = self.topic_streams()[role].max_age
        return own if own is not None else self.max_age

    def to_dict(self) -> dict[str, Any]:
        """The `spec:` mapping (from_dict's inverse) in its full form: stored in datasets and bundles."""
        d = {"control_period": self.control_period, "max_age": self.max_age,
             "inputs": {name: stream.topic_dict() for name, stream in self.inputs},
             "features": [f.to_dict() for f in self.features]}
        if self.terms:
            d["terms"] = {name: term.definition for name, term in self.terms}
        return {**d, "command": {**self.command.to_dict(), "low": list(self.action_low),
                                 "high": list(self.action_high), **({} if self.hold is None else {"hold": self.hold})},
                "reward": self.reward.to_dict(), "margin": self.margin.to_dict()}

    @property
    def obs_dim(self) -> int:
        return len(self.observation_names)

    @property
    def act_dim(self) -> int:
        return len(self.command.fields)

    def topic_streams(self) -> dict[str, Stream]:
        """Every stream read from a topic, by role: each input by its name, and `command`."""
        return {**dict(self.inputs), "command": self.command}

    @property
    def state(self) -> Stream:
        """The one state input of a single-topic task (the boat's simulator and tools write it)."""
        states = self.state_inputs()
        if len(states) != 1:
            raise TaskSpecError(f"task '{self.name}' has {len(states)} state inputs {states}; this tool needs one")
        return dict(self.inputs)[states[0]]

    def scale_action(self, raw: np.ndarray) -> np.ndarray:
        """Command units -> [-1, 1] (not clipped: the caller decides what out-of-range means)."""
        low, high = np.asarray(self.action_low), np.asarray(self.action_high)
        return 2.0 * (np.asarray(raw, dtype=np.float64) - low) / (high - low) - 1.0

    def unscale_action(self, action: np.ndarray) -> np.ndarray:
        """[-1, 1] -> command units, clipped to the bounds: nothing outside them is ever sent."""
        low, high = np.asarray(self.action_low), np.asarray(self.action_high)
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        return low + (a + 1.0) * 0.5 * (high - low)

    def observation(self, messages: Mapping[str, Any]) -> np.ndarray:
        """The observation vector of one message per state input (by input name)."""
        return self.observations({name: dict(self.inputs)[name].read(msg)[None] for name, msg in messages.items()})[0]

    def action(self, msg: Any) -> np.ndarray:
        """The action of a command message, scaled to [-1, 1]."""
        return self.scale_action(self.command.read(msg))

    def fill_state(self, msg: Any, observation: np.ndarray) -> Any:
        """Write an observation into a message of the one state input the caller constructed
        (simulators publish states this way); only a plain field per observed value can be written."""
        states = self.state_inputs()
        plain = [f for f in self.features if f.input in states]
        if len(states) != 1 or len(plain) != self.obs_dim or not all(
                isinstance(f.reader, Field) and not f.reader.wrap and f.observe and f.encode == "angle" for f in plain):
            raise TaskSpecError(f"task '{self.name}': its observation is not one plain field per value of one "
                                "input, so it cannot be written back into a message")
        for f, v in zip(plain, np.asarray(observation, dtype=np.float64).reshape(-1)):
            f.reader.path.set(msg, v)
        return msg

    def fill_command(self, msg: Any, action: np.ndarray) -> Any:
        """Write a [-1, 1] action, unscaled to command units, into a command message.

        Refuses non-finite actions: a NaN must never reach an actuator.
        """
        action = np.asarray(action, dtype=np.float64)
        if not np.isfinite(action).all():
            raise TaskSpecError(f"refusing to write a non-finite action {action.tolist()} to {self.command.topic}")
        return self.command.write(msg, self.unscale_action(action))


def _evaluate(fn: Any, values: Mapping[str, np.ndarray], what: str) -> np.ndarray:
    """An expression or term over `values`: one value per tick [N], or a TaskSpecError saying why not."""
    n = len(next(iter(values.values()))) if values else 1
    try:
        with np.errstate(all="ignore"):
            out = np.asarray(fn(values), dtype=np.float64)
    except ValueError as exc:  # ExpressionError, or numpy: shapes that do not broadcast
        raise TaskSpecError(f"spec {what}: {exc}") from None
    if out.ndim > 1 or (out.ndim == 1 and len(out) != n):
        raise TaskSpecError(f"spec {what} gives {out.shape[-1]} values per tick, not one; reduce a "
                            "group such as LaserScan sectors with min(...) or max(...)")
    return np.broadcast_to(out, (n,)).astype(np.float64)


def _identifier(path: str) -> str:
    """A feature name from a field path (the `state: fields:` shorthand):
    pose.pose.position.x -> pose_pose_position_x."""
    return re.sub(r"\W+", "_", path).strip("_")


def _canonical(d: Any) -> Mapping[str, Any]:
    """The full form of a spec. Two shorthands are accepted: `state: {topic, type, stamp,
    fields: [paths]}` (one input named `state`, one feature per path, named after it), and
    reward/margin `{topic, type, field}` (an input named `reward`/`margin` with one unobserved
    feature of that name)."""
    if not isinstance(d, Mapping):
        raise TaskSpecError(f"spec must be a mapping, got {type(d).__name__}")
    d = dict(d)
    if "state" in d:
        if "inputs" in d or "features" in d:
            raise TaskSpecError("spec has `state:` and `inputs:`/`features:`; use one form (state: is the short "
                                "form of a single input whose features are raw fields)")
        state = d.pop("state")
        check_keys(state, "state", {"topic", "type", "fields"}, STREAM_OPTIONS)
        fields = state["fields"]
        if isinstance(fields, str) or not isinstance(fields, list) or not fields:
            raise TaskSpecError(f"spec 'state.fields' must be a non-empty list of field paths, got {fields!r}")
        d["inputs"] = {"state": {k: v for k, v in state.items() if k != "fields"}}
        d["features"] = [{"name": _identifier(str(p)), "input": "state", "field": str(p)} for p in fields]
    for role in ("reward", "margin"):
        signal = d.get(role)
        if isinstance(signal, Mapping) and "field" in signal:
            check_keys(signal, role, {"topic", "type", "field"}, STREAM_OPTIONS)
            if not isinstance(d.get("inputs"), Mapping) or not isinstance(d.get("features"), list):
                raise TaskSpecError("spec lacks `inputs:` and `features:` (or the `state:` short form)")
            d["inputs"] = {**d["inputs"], role: {k: v for k, v in signal.items() if k != "field"}}
            d["features"] = [*d["features"], {"name": role, "input": role, "field": signal["field"], "observe": False}]
            d[role] = role
    return d


def _features(items: Any) -> tuple[Feature, ...]:
    if not isinstance(items, list) or not items:
        raise TaskSpecError(f"spec 'features' must be a non-empty list of {{name: ..., input: ..., field: ...}} "
                            f"entries, got {items!r}")
    return tuple(Feature.from_dict(f, f"features[{i}]") for i, f in enumerate(items))


def _inputs(d: Any, features: tuple[Feature, ...]) -> tuple[tuple[str, Stream], ...]:
    """The state topics by name, each with the readers of the features that read it, in order."""
    if not isinstance(d, Mapping) or not d:
        raise TaskSpecError(f"spec 'inputs' must map input names to {{topic, type, stamp, max_age}}, got {d!r}")
    unknown = sorted({f.input for f in features if f.input is not None} - set(d))
    if unknown:
        raise TaskSpecError(f"spec features read input(s) {unknown} that `inputs:` does not declare (have {sorted(d)})")
    inputs = []
    for name, topic in d.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name == "command":
            raise TaskSpecError(f"spec input name {name!r} must be an identifier (letters, digits, _) other than "
                                "'command'")
        check_keys(topic, f"inputs.{name}", {"topic", "type"}, STREAM_OPTIONS)
        readers = tuple(f.reader for f in features if f.input == name)
        if not readers:
            raise TaskSpecError(f"spec input '{name}' is read by no feature; add one or remove the input")
        inputs.append((name, Stream.topic_only(topic, f"inputs.{name}", readers)))
    return tuple(inputs)


def _terms(d: Any) -> tuple[tuple[str, Term], ...]:
    if not isinstance(d, Mapping):
        raise TaskSpecError(f"spec 'terms' must map term names to {{kind: ..., ...}}, got {d!r}")
    terms = []
    for name, term in d.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in FUNCTIONS_AND_CONSTANTS:
            raise TaskSpecError(f"spec term name {name!r} must be an identifier that is not a function name")
        try:
            terms.append((name, build_term(term, f"terms.{name}")))
        except TermError as exc:
            raise TaskSpecError(f"spec {exc}") from None
    return tuple(terms)


# Tasks with a simulator here that runs one spec only, by name: the spec of the robot each
# simulator simulates. A task whose simulator is added to the project registers it here, so
# calibrate, evaluate and replay accept it exactly where a recorded spec is that robot's. (The
# diff-drive robot's simulator runs any spec of its messages within its limits, and checks that
# itself: safefql_core.pipeline.diffdrive_evaluate.)
SIMULATED: dict[str, Callable[[], TaskSpec]] = {"boat": lambda: TaskSpec.builtin("boat")}


def simulator_mismatch(task: str, spec: Mapping[str, Any] | None) -> str | None:
    """Why no simulator here stands for the robot of `task` as its recorded `spec` defines it
    (None: one does). A task without a spec (a simulator's own dataset: the boat's, Safety
    Gymnasium's) is its simulator's. A task defined by a spec has one only when the spec is
    its simulator's robot (`SIMULATED`): a spec called 'boat' that reads other topics or
    fields, or has other bounds, period, reward or margin, is another robot, and nothing
    trained for it is ever calibrated or evaluated in the boat's simulator. The command's
    message type and field paths are how an action travels, not what it does: a boat spec
    written before the built-in one moved to TwistStamped (a Twist's linear.x/linear.y) is
    still the boat."""
    if not spec:
        return None
    if task not in SIMULATED:
        return f"task '{task}' is defined by its spec alone and has no simulator here (only {sorted(SIMULATED)} do)"
    robot, sim = TaskSpec.from_dict(spec, task), SIMULATED[task]()
    diffs = [d for d in sim.differences(robot, "simulator", "spec")
             if not d.startswith(("command.type:", "command.fields:"))]
    topics = lambda s: [s.topic_streams()[n].topic for n in s.state_inputs()] + [s.command.topic]  # noqa: E731
    if topics(sim) != topics(robot):
        diffs.append(f"topics: simulator {topics(sim)}, spec {topics(robot)}")
    if not diffs:  # the same inputs in the same order: compare reward and margin on the same raw values
        rng = np.random.default_rng(0)
        raw = [rng.uniform(-3.0, 3.0, (256, sim.topic_streams()[n].width)) for n in sim.state_inputs()]
        try:
            same = all(np.allclose(a, b) for a, b in zip(sim.signals(dict(zip(sim.state_inputs(), raw))),
                                                         robot.signals(dict(zip(robot.state_inputs(), raw)))))
        except TaskSpecError:
            same = False
        if not same:
            diffs.append(f"reward or margin: simulator {sim.reward.to_dict()} / {sim.margin.to_dict()}, "
                         f"spec {robot.reward.to_dict()} / {robot.margin.to_dict()}")
    if diffs:
        return (f"task '{task}' records a spec that is not its simulator's robot ({'; '.join(diffs)}), so it "
                "counts as a task without a simulator")
    return None


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
                            f"{spec.observation_names} and writes {spec.act_dim} action values, but the bundle's "
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

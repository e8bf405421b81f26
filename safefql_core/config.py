"""Shared plumbing for the learners' config dataclasses: unknown keys, types and ranges.

A config arrives from YAML and `--set KEY=VALUE`, so any value can be of any type. Every key
is checked against its annotation (an int is not a bool, a number is not a string) and every
number against its range in RANGES — one table for all learners, so a key shared by several
(steps, lr, gamma, ...) means the same everywhere. A value outside its range would train
silently to nonsense (gamma 1.5 diverges, batch_size 0 gives NaN losses, reversed phases skip
the actor): it is refused with the key, the value and the range.
"""
from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, TypeVar

T = TypeVar("T", bound="ConfigMixin")


@dataclass(frozen=True)
class Range:
    """A closed or half-open interval of allowed numbers; for a list key, of each element."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    increasing: bool = False  # list keys: elements in non-decreasing order
    length: int | None = None  # list keys: exact length

    def holds(self, x: float) -> bool:
        above = x > self.low if self.low_open else x >= self.low
        below = x < self.high if self.high_open else x <= self.high
        return math.isfinite(x) and above and below

    def __str__(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


UNIT_OPEN = Range(0.0, 1.0, low_open=True, high_open=True)
DISCOUNT = Range(0.0, 1.0, high_open=True)   # gamma = 1 never contracts: the critics' targets grow without bound
WIDTHS = Range(1, 65_536)                    # hidden layer widths
WEIGHT = Range(0.0, 1e9)
RANGES: dict[str, Range] = {
    "steps": Range(1, 1e9), "batch_size": Range(1, 1e7), "lr": Range(0.0, 1.0, low_open=True),
    "gamma": DISCOUNT, "safety_gamma": DISCOUNT, "expectile": UNIT_OPEN, "safety_expectile": UNIT_OPEN,
    "ema": Range(0.0, 1.0, low_open=True), "critic_hidden": WIDTHS, "critic_members": Range(1, 64),
    "cost_scale": Range(0.0, 1e6, low_open=True), "n_step": Range(1, 10_000),
    "flow_hidden": WIDTHS, "flow_steps": Range(1, 1000), "alpha": WEIGHT, "safety_weight": WEIGHT,
    "gate_threshold": Range(-1e6, 1e6), "phases": Range(0.0, 1.0, increasing=True, length=2),
    "lagrangian_eta": WEIGHT, "hidden": WIDTHS, "denoiser_hidden": WIDTHS, "diffusion_steps": Range(1, 1000),
    "candidates": Range(1, 4096), "infeasible_temperature": Range(0.0, 1e3), "feasible_temperature": Range(0.0, 1e3),
    "infeasible_clip": Range(0.0, 1e9, low_open=True), "feasible_clip": Range(0.0, 1e9, low_open=True),
    "flow_ema": Range(0.0, 1.0, low_open=True),
}


class ConfigMixin:
    """from_dict that rejects unknown keys (a typo in a YAML must not be silently ignored),
    values of the wrong type and numbers outside their RANGES."""

    __dataclass_fields__: ClassVar[dict[str, Any]]  # every user is a dataclass

    @classmethod
    def from_dict(cls: type[T], values: dict[str, Any]) -> T:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} key(s) {unknown}; valid keys: {sorted(known)}")
        cfg = cls(**values)
        cfg.check_values()
        cfg.check()
        return cfg

    def check_values(self) -> None:
        """Every field against its annotation and its range (ValueError naming key, value, range)."""
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            why = _problem(getattr(self, f.name), hints[f.name], RANGES.get(f.name))
            if why:
                raise ValueError(f"{type(self).__name__} key '{f.name}' {why}, got {getattr(self, f.name)!r}")

    def check(self) -> None:
        """Validate field values; overridden where a field has a closed set of choices."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_number(value: Any, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if integer else isinstance(value, (int, float))


def _problem(value: Any, hint: Any, rng: Range | None) -> str:
    """Why `value` does not fit its annotation and range; "" when it does."""
    args = typing.get_args(hint)
    if type(None) in args:  # Optional[X]: None, or an X
        if value is None:
            return ""
        hint = next(a for a in args if a is not type(None))
    if hint is bool:
        return "" if isinstance(value, bool) else "must be true or false"
    if hint is str:
        return "" if isinstance(value, str) else "must be a string"
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        kind = "integers" if item is int else "numbers"
        if not isinstance(value, list) or not value or not all(_is_number(v, item is int) for v in value):
            return f"must be a non-empty list of {kind}"
        if rng is not None and not (all(rng.holds(v) for v in value)
                                    and (rng.length is None or len(value) == rng.length)
                                    and (not rng.increasing or value == sorted(value))):
            shape = f"{rng.length} " if rng.length else ""
            order = " in increasing order" if rng.increasing else ""
            return f"must be {shape}{kind} in {rng}{order}"
        return ""
    integer = hint is int
    if not _is_number(value, integer):
        return f"must be {'an integer' if integer else 'a number'}"
    if rng is not None and not rng.holds(value):
        return f"must be in {rng}"
    return ""

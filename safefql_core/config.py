"""Shared plumbing for the learners' config dataclasses."""
from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, TypeVar

T = TypeVar("T", bound="ConfigMixin")


class ConfigMixin:
    """from_dict that rejects unknown keys (a typo in a YAML must not be silently ignored)."""

    @classmethod
    def from_dict(cls: type[T], values: dict[str, Any]) -> T:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} key(s) {unknown}; valid keys: {sorted(known)}")
        cfg = cls(**values)
        cfg.check()
        return cfg

    def check(self) -> None:
        """Validate field values; overridden where a field has a closed set of choices."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

"""The deployed decision's settings: one record, kept in the bundle (docs/DESIGN.md, "One decision").

What `Runtime.decide` does besides the networks — the stop action, the fallback candidates,
how many extra actor samples it scores on an intervention, how many proposals it ranks, and
whether the actor's noise is zero or sampled — changes which action is sent, and so what the
calibrated δ* means: δ* is fitted to rollouts of one decision (`decision_calibration`). These
settings therefore live in the bundle (schema 3), next to the δ* that certifies them, and the
node, `evaluate`, `replay` and `calibrate` all read them from there. Before, there were four
sources (the node's YAML, evaluate's fallbacks, replay's bare defaults, calibrate's torch
actor), and nothing said which of them δ* was measured on.

No torch and no ROS here: the node loads this with the bundle.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

NOISES = ("zero", "sample")
# Extra actor samples scored when an action fails the check, and actor noises per tick: the
# defaults every deployment used before the bundle recorded them (schema 2).
DEFAULT_CANDIDATES = 8
DEFAULT_PROPOSALS = 1
# Fallback candidates per task ([-1, 1] action units), scored with the actor's samples when its
# action fails the check. Boat: the eight compass headings of the thrust. Diff-drive (v, w): stop
# (always safe for a kinematic base that stops at once), turn in place either way, back off slowly.
TASK_FALLBACKS: dict[str, list[list[float]]] = {
    "boat": [[float(np.cos(a)), float(np.sin(a))] for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)],
    "diffdrive": [[0.0, 0.0], [0.0, 1.0], [0.0, -1.0], [-0.5, 0.0]],
}
# Proposals per task where not DEFAULT_PROPOSALS: the diff-drive robot's goal rate needs 16
# (docs/notebook/session-18.md, "Diff-drive robot"); its node deployed them before the bundle
# recorded a decision.
TASK_PROPOSALS: dict[str, int] = {"diffdrive": 16}


class DecisionError(ValueError):
    """Decision settings outside their range; the message names the setting."""


@dataclass(frozen=True)
class DecisionSettings:
    """The settings of `Runtime.decide` that choose the sent action (not its timing or inputs)."""

    stop_action: tuple[float, ...]                 # sent when the state cannot be trusted
    fallback_actions: tuple[tuple[float, ...], ...] = ()
    candidates: int = DEFAULT_CANDIDATES           # extra actor noise samples scored on intervention
    proposals: int = DEFAULT_PROPOSALS             # actor noises per tick; > 1: keep the best certified
    noise: str = "zero"                            # actor noise on the nominal path: zero | sample

    @classmethod
    def for_task(cls, task: str, act_dim: int) -> DecisionSettings:
        """The default decision of a task: zero stop action, its fallbacks (none for a task
        without a table entry), 8 candidates, 1 proposal (the diff-drive robot: 16), zero noise.
        Also what a schema-2 bundle (which recorded none) was deployed with by the node."""
        fallbacks = TASK_FALLBACKS.get(task, [])
        return cls.build([0.0] * act_dim, fallbacks if all(len(f) == act_dim for f in fallbacks) else [],
                         proposals=TASK_PROPOSALS.get(task, DEFAULT_PROPOSALS), act_dim=act_dim)

    @classmethod
    def build(cls, stop_action, fallback_actions=(), candidates: int = DEFAULT_CANDIDATES,
              proposals: int = DEFAULT_PROPOSALS, noise: str = "zero", *, act_dim: int) -> DecisionSettings:
        """Settings from plain values (lists, a flat list of fallbacks), checked for `act_dim`."""
        stop = _actions(stop_action, act_dim, "stop_action")
        if len(stop) != 1:
            raise DecisionError(f"stop_action must be one action of {act_dim} values, got {len(stop)} actions")
        fallbacks = _actions(fallback_actions, act_dim, "fallback_actions").tolist()
        settings = cls(tuple(stop.tolist()[0]), tuple(map(tuple, fallbacks)), candidates, proposals, noise)
        settings.check()
        return settings

    @classmethod
    def from_dict(cls, entry: Any, act_dim: int) -> DecisionSettings:
        """Settings from their JSON form (bundle.json, calibration.json); DecisionError names
        what is wrong."""
        if not isinstance(entry, dict) or sorted(entry) != sorted(f.name for f in dataclasses.fields(cls)):
            raise DecisionError(f"a decision entry needs exactly {[f.name for f in dataclasses.fields(cls)]}, "
                                f"got {entry!r:.120}")
        return cls.build(**entry, act_dim=act_dim)

    def to_dict(self) -> dict[str, Any]:
        return {"stop_action": list(self.stop_action), "fallback_actions": [list(a) for a in self.fallback_actions],
                "candidates": self.candidates, "proposals": self.proposals, "noise": self.noise}

    def check(self) -> None:
        """Refuse values that would weaken or break the decision, naming the setting and its range."""
        if self.noise not in NOISES:
            raise DecisionError(f"noise must be 'zero' or 'sample', got {self.noise!r}")
        for name, low in (("candidates", 0), ("proposals", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise DecisionError(f"{name} must be an integer >= {low}, got {value!r}")

    def with_changes(self, **changes: Any) -> DecisionSettings:
        """These settings with the given ones replaced; a None value keeps the setting (a node
        parameter or CLI flag left at 'the bundle's'). Action lists are checked for this
        decision's action size."""
        given = {k: v for k, v in changes.items() if v is not None}
        if not given:
            return self
        return DecisionSettings.build(**{**self.to_dict(), **given}, act_dim=len(self.stop_action))

    def differences(self, other: DecisionSettings) -> list[str]:
        """The names of the settings in which `other` differs from these."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(other, f.name)]

    def describe(self) -> str:
        """One line for logs and reports."""
        return (f"{self.proposals} proposal(s), noise {self.noise}, {self.candidates} candidate(s), "
                f"{len(self.fallback_actions)} fallback(s), stop action {list(self.stop_action)}")


def _actions(values: Any, act_dim: int, name: str) -> np.ndarray:
    """Actions as float32 rows of `act_dim` values in [-1, 1] (a flat list is reshaped); exactly
    representable in float32, so a bundle's settings compare equal after a JSON round trip."""
    try:
        flat = [float(v) for v in np.ravel(np.asarray(values, dtype=np.float64))]
    except (TypeError, ValueError):  # not numbers, or ragged lists (e.g. a hand-edited bundle.json)
        flat = [math.nan]
    if len(flat) % act_dim or not all(math.isfinite(v) and abs(v) <= 1.0 for v in flat):
        raise DecisionError(f"{name} must be finite actions in [-1, 1] with {act_dim} values each, got {flat!r:.120}")
    return np.asarray(flat, dtype=np.float32).astype(np.float64).reshape(-1, act_dim)

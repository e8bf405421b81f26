"""Causal zero-order-hold alignment of recorded topics on the control grid (ROS_CONVENTIONS.md, "Bags").

Pure numpy on arrays of stamps, so it is unit-tested without bags. The rules:

* Episodes: the state stream is cut wherever it falls silent for longer than `max_age`
  (the node would have stopped the robot there). Each episode gets its own grid
  t_k = t_first + k * control_period up to its last state; nothing is ever interpolated,
  and no transition crosses a cut.
* Observation (and reward/margin read from topics) at tick k: the latest sample at or
  before t_k, invalid if older than `max_age`.
* Action of tick k: the latest command strictly before t_{k+1}, invalid if older than
  `max_age` there — the command in force when the next state was observed. Sampling the
  command at t_k instead would pair each state with the previous command whenever the
  controller publishes a little after its tick, i.e. on every real robot.
* A transition (k -> k+1) is kept only if every value it uses is valid and finite. The
  last kept transition before a cut or a dropped tick is a time-out (the trajectory goes
  on, it is just not recorded); bags carry no terminal signal, so `terminals` is all 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from safefql_core.tasks import NS, TaskSpec

NONFINITE_POLICIES = ("refuse", "drop")


class AlignmentError(ValueError):
    """Recorded data that cannot become a dataset as asked; the message says what to do."""


@dataclass
class TimeSeries:
    """Samples of one stream: int64 nanosecond stamps and float64 values [n, dim]."""

    stamps: np.ndarray
    values: np.ndarray

    def sorted(self) -> TimeSeries:
        """Sorted by stamp (header stamps need not arrive in order); stable for equal stamps."""
        order = np.argsort(self.stamps, kind="stable")
        return TimeSeries(self.stamps[order], self.values[order])


@dataclass
class AlignmentReport:
    """What the alignment did, for the summary a user reads: nothing is dropped silently."""

    episodes: int = 0
    ticks: int = 0
    transitions: int = 0
    timeouts: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    nonfinite_samples: dict[str, int] = field(default_factory=dict)
    clipped_actions: int = 0


def latest_at_or_before(stamps: np.ndarray, ticks: np.ndarray, max_age: int,
                        strictly_before: bool = False) -> np.ndarray:
    """Index of the latest sample at (or strictly before) each tick; -1 where none is
    within `max_age`. `stamps` must be sorted; all times in integer nanoseconds."""
    idx = np.searchsorted(stamps, ticks, side="left" if strictly_before else "right") - 1
    found = idx >= 0
    fresh = found & (ticks - stamps[np.maximum(idx, 0)] <= max_age)
    return np.where(fresh, idx, -1)


def episode_bounds(stamps: np.ndarray, max_gap: int) -> np.ndarray:
    """[E, 2] first/last sample index of each run of sorted stamps without a gap > max_gap."""
    cuts = np.flatnonzero(np.diff(stamps) > max_gap)
    return np.stack([np.concatenate([[0], cuts + 1]), np.concatenate([cuts, [len(stamps) - 1]])], axis=1)


def control_grid(stamps: np.ndarray, bounds: np.ndarray, period: int) -> tuple[np.ndarray, np.ndarray]:
    """(ticks, episode id per tick): each episode's grid from its first to its last stamp."""
    first, last = stamps[bounds[:, 0]], stamps[bounds[:, 1]]
    counts = (last - first) // period + 1
    episode = np.repeat(np.arange(len(bounds)), counts)
    step = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return first[episode] + step * period, episode


def build_transitions(spec: TaskSpec, series: dict[str, TimeSeries],
                      on_nonfinite: str = "refuse") -> tuple[dict[str, np.ndarray], AlignmentReport]:
    """Dataset arrays (data.Dataset fields) from the spec's topic streams, and a report.

    `series` holds one TimeSeries per role of `spec.topic_streams()`. Non-finite samples
    are counted per role; `refuse` raises, `drop` drops the ticks that would use them.
    """
    if on_nonfinite not in NONFINITE_POLICIES:
        raise AlignmentError(f"on_nonfinite must be one of {NONFINITE_POLICIES}, got {on_nonfinite!r}")
    series = {role: s.sorted() for role, s in series.items()}
    topics = spec.topic_streams()
    empty = [f"{topics[role].topic} ({role})" for role in topics if len(series[role].stamps) == 0]
    if empty:
        raise AlignmentError(f"no samples on {', '.join(empty)}; record those topics or fix the spec's topic names")
    period, max_age = round(spec.control_period * NS), round(spec.max_age * NS)
    report = AlignmentReport()
    finite = {role: np.isfinite(s.values).all(axis=1) for role, s in series.items()}
    report.nonfinite_samples = {role: int((~ok).sum()) for role, ok in finite.items() if not ok.all()}
    if report.nonfinite_samples and on_nonfinite == "refuse":
        counts = ", ".join(f"{n:,} on {topics[r].topic} ({r})" for r, n in report.nonfinite_samples.items())
        raise AlignmentError(f"non-finite values in {counts}; pass --on-nonfinite drop to drop the ticks "
                             "that use them (they are counted in the summary), or repair the recording")

    state = series["state"]
    bounds = episode_bounds(state.stamps, max_age)
    ticks, episode = control_grid(state.stamps, bounds, period)
    report.episodes, report.ticks = len(bounds), len(ticks)

    # Transition k uses tick k and tick k + 1 of the same episode.
    same_episode = episode[:-1] == episode[1:]
    now, nxt, owner = ticks[:-1][same_episode], ticks[1:][same_episode], episode[:-1][same_episode]
    obs_idx = latest_at_or_before(state.stamps, ticks, max_age)
    checks = [("state", obs_idx[:-1][same_episode]), ("next state", obs_idx[1:][same_episode]),
              ("command", latest_at_or_before(series["command"].stamps, nxt, max_age, strictly_before=True))]
    checks += [(role, latest_at_or_before(series[role].stamps, now, max_age))
               for role in ("reward", "margin") if role in series]
    keep = _usable(checks, finite, report.dropped)
    if not keep.any():
        raise AlignmentError(f"no transition survived the alignment ({report.ticks:,} ticks in {report.episodes} "
                             f"episode(s); dropped: {report.dropped or 'none'}); check the topics' rates and "
                             "stamps against the spec's control_period and max_age")
    idx = {name: i[keep] for name, i in checks}

    observations = state.values[idx["state"]]
    raw_actions = spec.scale_action(series["command"].values[idx["command"]])
    actions = np.clip(raw_actions, -1.0, 1.0)
    report.clipped_actions = int((actions != raw_actions).any(axis=1).sum())
    margins = _signal(spec, "margin", series, idx, observations)
    timeouts = _timeouts(np.flatnonzero(keep), owner)
    arrays = {
        "observations": observations,
        "next_observations": state.values[idx["next state"]],
        "actions": actions,
        "rewards": _signal(spec, "reward", series, idx, observations),
        "costs": (margins > 0).astype(np.float64),
        "margins": margins,
        "terminals": np.zeros(len(timeouts)),
        "timeouts": timeouts,
    }
    report.transitions, report.timeouts = len(timeouts), int(timeouts.sum())
    return {k: v.astype(np.float32) for k, v in arrays.items()}, report


def _usable(checks: list[tuple[str, np.ndarray]], finite: dict[str, np.ndarray],
            dropped: dict[str, int]) -> np.ndarray:
    """Transitions whose every sample is fresh and finite; each dropped one is counted
    once, under the first check it fails."""
    keep = np.ones(len(checks[0][1]), dtype=bool)
    for name, idx in checks:
        role = "state" if name == "next state" else name
        stale, bad = idx < 0, np.zeros(len(idx), dtype=bool)
        bad[~stale] = ~finite[role][idx[~stale]]
        for reason, mask in ((f"no {name} within max_age", keep & stale), (f"non-finite {name}", keep & bad)):
            if mask.any():
                dropped[reason] = int(mask.sum())
        keep &= ~stale & ~bad
    return keep


def _timeouts(kept: np.ndarray, episode: np.ndarray) -> np.ndarray:
    """A kept transition is a time-out unless the next one of its episode's grid is kept too."""
    timeouts = np.ones(len(kept))
    timeouts[:-1] = (kept[1:] != kept[:-1] + 1) | (episode[kept[1:]] != episode[kept[:-1]])
    return timeouts


def _signal(spec: TaskSpec, role: str, series: dict[str, TimeSeries], idx: dict[str, np.ndarray],
            observations: np.ndarray) -> np.ndarray:
    """Reward or margin of each kept tick: its topic's aligned value, or the named function."""
    if role in series:
        return series[role].values[idx[role], 0]
    return getattr(spec, role)(observations)

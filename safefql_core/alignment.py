"""Causal zero-order-hold alignment of recorded streams on the control grid (ROS_CONVENTIONS.md, "Bags").

Pure numpy on arrays of stamps, so it is unit-tested without bags. `align` is generic: it
takes any number of *state* tracks (e.g. odometry and a lidar), one *command* track and
any number of *signal* tracks (reward or margin read from topics), each a `Track` with its
own stamps and its own maximum age. `build_transitions` is the task spec's use of it. The
rules:

* Episodes: a state track is cut wherever it falls silent for longer than its `max_age`
  (the node would have stopped the robot there); an episode is a stretch where every
  state track is running (the intersection of their runs). Each episode gets its own grid
  t_k = t_start + k * control_period up to its end; nothing is ever interpolated, and no
  transition crosses a cut.
* State (and signal) at tick k: each track's latest sample at or before t_k, invalid if
  older than that track's `max_age`.
* Action of tick k: the latest command strictly before t_{k+1}, invalid if older than the
  command track's `max_age` — its *hold* — there: the command in force when the next state
  was observed. Sampling the command at t_k instead would pair each state with the previous
  command whenever the controller publishes a little after its tick, i.e. on every real
  robot. The hold is separate from the states' maximum age because commands may be sparse
  (teleop, a 2 Hz planner) while states must be fresh.
* A transition (k -> k+1) is kept only if every value it uses is valid (fresh, finite, not
  ambiguous). The last kept transition before a cut or a dropped tick is a time-out (the
  trajectory goes on, it is just not recorded); bags carry no terminal signal, so
  `terminals` is all 0.

Nothing is dropped or repaired silently: the `AlignmentReport` counts every dropped tick by
reason, non-finite samples, samples that arrived out of stamp order, exact duplicate samples,
duplicate stamps with different values, and transitions whose next state is the same sample
as their state (held states). Time going backwards by more than a track's max age (a
simulator reset, recordings concatenated) and streams whose stamps do not overlap at all
(different clocks) are refused with the fix.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from safefql_core.tasks import NS, TaskSpec

NONFINITE_POLICIES = ("refuse", "drop")
DUPLICATE_POLICIES = ("refuse", "drop")
# Stamps below this many ns since 1970 (~3 years) are not wall-clock times: sim time or a
# clock that starts at zero. Used only to word the clock-mismatch error.
WALL_CLOCK_MIN_NS = 100_000_000 * NS


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


@dataclass(frozen=True)
class Track:
    """One recorded stream as the alignment sees it.

    `name` keys it in `Alignment` and the report ("state", "command", "reward", or any name a
    spec with several state topics gives). `max_age` (seconds) is how old its sample may be
    where it is used: a state's or signal's maximum age, or the command's hold. `topic` and
    `stamp` (the stamp source, "header" or "receive") only word the errors. `series` is in
    arrival (bag) order: sorting it is the alignment's job, so that it can count what
    arrived out of order.
    """

    name: str
    series: TimeSeries
    max_age: float
    topic: str = ""
    stamp: str = ""

    @property
    def label(self) -> str:
        return f"{self.topic} ({self.name})" if self.topic else self.name


@dataclass
class AlignmentReport:
    """What the alignment did, for the summary a user reads: nothing is dropped silently.

    `dropped`: transitions dropped, by reason (each counted once, under the first reason).
    Per track name: `nonfinite_samples`; `reordered_samples` (arrived with a stamp older than
    an earlier sample's, within max_age, and sorted); `duplicate_samples` (exact copies of a
    sample, same stamp and value, dropped); `ambiguous_samples` (samples sharing a stamp with
    different values); `held_states` (kept transitions whose next state is the same sample
    as their state: the state track is slower than the control period, or silent for a
    while within its max age).
    """

    episodes: int = 0
    ticks: int = 0
    transitions: int = 0
    timeouts: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    nonfinite_samples: dict[str, int] = field(default_factory=dict)
    clipped_actions: int = 0
    reordered_samples: dict[str, int] = field(default_factory=dict)
    duplicate_samples: dict[str, int] = field(default_factory=dict)
    ambiguous_samples: dict[str, int] = field(default_factory=dict)
    held_states: dict[str, int] = field(default_factory=dict)

    def merge(self, other: AlignmentReport) -> AlignmentReport:
        """The report of two recordings aligned separately (several bags into one dataset)."""
        merged = AlignmentReport()
        for name, value in vars(self).items():
            theirs = getattr(other, name)
            if isinstance(value, dict):
                setattr(merged, name, {k: value.get(k, 0) + theirs.get(k, 0) for k in {**value, **theirs}})
            else:
                setattr(merged, name, value + theirs)
        return merged


@dataclass
class Alignment:
    """Sample indices of each kept transition k -> k+1, into each track's sorted series.

    `now[name]`: the sample of every state and signal track at tick k; `next[name]`: every
    state track's sample at tick k+1; `command`: the command in force until tick k+1;
    `timeouts` per kept transition (1 where the next one starts another episode). `at`/`after`
    give the values.
    """

    series: dict[str, TimeSeries]
    now: dict[str, np.ndarray]
    next: dict[str, np.ndarray]
    command: np.ndarray
    timeouts: np.ndarray
    report: AlignmentReport

    def at(self, name: str) -> np.ndarray:
        """Values of track `name` at tick k of each kept transition."""
        return self.series[name].values[self.now[name]]

    def after(self, name: str) -> np.ndarray:
        """Values of state track `name` at tick k+1 of each kept transition."""
        return self.series[name].values[self.next[name]]


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


def runs(stamps: np.ndarray, max_gap: int) -> np.ndarray:
    """[E, 2] first/last stamp (ns) of each run of sorted stamps without a gap > max_gap."""
    return stamps[episode_bounds(stamps, max_gap)]


def intersect(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[E, 2] intersection of two sorted lists of disjoint closed intervals [start, end]."""
    start = np.maximum(a[:, None, 0], b[None, :, 0])
    end = np.minimum(a[:, None, 1], b[None, :, 1])
    both = start <= end
    return np.stack([start[both], end[both]], axis=1).reshape(-1, 2)


def control_grid(intervals: np.ndarray, period: int) -> tuple[np.ndarray, np.ndarray]:
    """(ticks, episode id per tick): each interval's grid from its start to its end."""
    first, last = intervals[:, 0], intervals[:, 1]
    counts = (last - first) // period + 1
    episode = np.repeat(np.arange(len(intervals)), counts)
    step = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return first[episode] + step * period, episode


def align(states: Sequence[Track], command: Track, signals: Sequence[Track] = (), *, control_period: float,
          on_nonfinite: str = "refuse", on_duplicate: str = "refuse") -> Alignment:
    """Put the tracks on the control grid (module docstring) and return the kept transitions.

    Track names must be unique. `on_nonfinite` / `on_duplicate`: `refuse` raises on a
    non-finite sample / on samples that share a stamp with different values; `drop` drops the
    transitions that would use them (counted in the report).
    """
    for name, value, allowed in (("on_nonfinite", on_nonfinite, NONFINITE_POLICIES),
                                 ("on_duplicate", on_duplicate, DUPLICATE_POLICIES)):
        if value not in allowed:
            raise AlignmentError(f"{name} must be one of {allowed}, got {value!r}")
    tracks = [*states, command, *signals]
    names = [t.name for t in tracks]
    if not states or len(set(names)) != len(names):
        raise AlignmentError(f"align needs at least one state track and unique track names, got {names}")
    empty = [t.label for t in tracks if len(t.series.stamps) == 0]
    if empty:
        raise AlignmentError(f"no samples on {', '.join(empty)}; record those topics or fix the spec's topic names")
    report = AlignmentReport()
    prepared = {t.name: _prepare(t, report) for t in tracks}
    _refuse_flaws(tracks, report, on_nonfinite, on_duplicate)
    series = {name: s for name, (s, _) in prepared.items()}
    flaws = {name: f for name, (_, f) in prepared.items()}
    age = {t.name: round(t.max_age * NS) for t in tracks}

    intervals = runs(series[states[0].name].stamps, age[states[0].name])
    for track in states[1:]:
        _check_clocks(states[0], track, series)
        intervals = intersect(intervals, runs(series[track.name].stamps, age[track.name]))
    if len(intervals) == 0:
        raise AlignmentError(f"the state tracks {[t.label for t in states]} are never all running at once "
                             "(each is cut where it is silent longer than its max_age); record them together "
                             "or raise their max_age")
    ticks, episode = control_grid(intervals, round(control_period * NS))
    report.episodes, report.ticks = len(intervals), len(ticks)
    for track in (command, *signals):
        _check_clocks(states[0], track, series, span=(int(ticks[0]), int(ticks[-1])))

    # Transition k uses tick k and tick k + 1 of the same episode.
    same_episode = episode[:-1] == episode[1:]
    now, nxt, owner = ticks[:-1][same_episode], ticks[1:][same_episode], episode[:-1][same_episode]
    # (what the report calls it, track name, which tick, sample index per transition)
    checks: list[tuple[str, str, str, np.ndarray]] = []
    for track in states:
        idx = latest_at_or_before(series[track.name].stamps, ticks, age[track.name])
        label = "state" if track.name == "state" else f"{track.name} state"
        checks += [(label, track.name, "now", idx[:-1][same_episode]),
                   (f"next {label}", track.name, "next", idx[1:][same_episode])]
    checks.append(("command", command.name, "command",
                   latest_at_or_before(series[command.name].stamps, nxt, age[command.name], strictly_before=True)))
    checks += [(t.name, t.name, "now", latest_at_or_before(series[t.name].stamps, now, age[t.name]))
               for t in signals]
    limits = {t.name: "hold" if t is command else "max_age" for t in tracks}
    keep = _usable(checks, flaws, limits, report.dropped)
    if not keep.any():
        raise AlignmentError(f"no transition survived the alignment ({report.ticks:,} ticks in {report.episodes} "
                             f"episode(s); dropped: {report.dropped or 'none'}); check the topics' rates and "
                             "stamps against the spec's control_period, max_age and command hold")
    picked = {(name, tick): idx[keep] for _, name, tick, idx in checks}
    state_now = {t.name: picked[t.name, "now"] for t in states}
    state_next = {t.name: picked[t.name, "next"] for t in states}
    held = {name: int((state_now[name] == state_next[name]).sum()) for name in state_now}
    report.held_states = {name: n for name, n in held.items() if n}
    timeouts = _timeouts(np.flatnonzero(keep), owner)
    report.transitions, report.timeouts = len(timeouts), int(timeouts.sum())
    return Alignment(series=series, now={name: i for (name, tick), i in picked.items() if tick == "now"},
                     next=state_next, command=picked[command.name, "command"], timeouts=timeouts, report=report)


def _prepare(track: Track, report: AlignmentReport) -> tuple[TimeSeries, list[tuple[str, np.ndarray]]]:
    """The track sorted, its exact duplicates removed, and its flawed samples marked and counted.

    Time going backwards by more than max_age is refused: sorting would interleave two
    recordings of the same time span (a simulator reset, bags concatenated) into nonsense.
    A smaller step back is ordinary (header stamps from several threads) and only counted.
    """
    stamps, name = track.series.stamps, track.name
    lag = np.maximum.accumulate(stamps)[:-1] - stamps[1:]  # > 0: stamped before an earlier sample
    back = lag > 0
    if back.any():
        worst = int(lag.max())
        if worst > round(track.max_age * NS):
            raise AlignmentError(
                f"time goes backwards on {track.label}: {int(back.sum()):,} sample(s) stamped before an earlier one, "
                f"by up to {worst / NS:.3f} s (more than its max_age {track.max_age:g} s); the recording holds "
                f"several runs over the same time span (a simulator reset, or recordings joined). Record each run "
                f"into its own bag (several bags convert into one dataset, episodes never joined across bags)"
                + (", or stamp this stream by receive time (`stamp: receive`)" if track.stamp == "header" else ""))
        report.reordered_samples[name] = int(back.sum())
    s = track.series.sorted()
    same_stamp = np.diff(s.stamps) == 0
    a, b = s.values[1:], s.values[:-1]
    same_value = ((a == b) | (np.isnan(a) & np.isnan(b))).all(axis=1)
    copy = np.concatenate([[False], same_stamp & same_value])
    if copy.any():
        report.duplicate_samples[name] = int(copy.sum())
        s = TimeSeries(s.stamps[~copy], s.values[~copy])
    shared = np.diff(s.stamps) == 0
    ambiguous = np.concatenate([shared, [False]]) | np.concatenate([[False], shared])
    if ambiguous.any():
        report.ambiguous_samples[name] = int(ambiguous.sum())
    finite = np.isfinite(s.values).all(axis=1)
    if not finite.all():
        report.nonfinite_samples[name] = int((~finite).sum())
    return s, [("non-finite", ~finite), ("duplicate-stamp", ambiguous)]


def _refuse_flaws(tracks: Sequence[Track], report: AlignmentReport, on_nonfinite: str, on_duplicate: str) -> None:
    """Raise, naming every track concerned, for the flaws whose policy is `refuse`."""
    label = {t.name: t.label for t in tracks}
    counts = lambda found: ", ".join(f"{n:,} on {label[name]}" for name, n in found.items())  # noqa: E731
    if report.nonfinite_samples and on_nonfinite == "refuse":
        raise AlignmentError(f"non-finite values in {counts(report.nonfinite_samples)}; pass --on-nonfinite drop "
                             "to drop the ticks that use them (they are counted in the summary), or repair the "
                             "recording")
    if report.ambiguous_samples and on_duplicate == "refuse":
        raise AlignmentError(
            f"samples that share a stamp with a different value: {counts(report.ambiguous_samples)}; which one "
            "held at that time is unknown (two publishers on one topic, or a stamp that is not set per message). "
            "Fix the recording, stamp the stream by receive time (`stamp: receive`), or pass --on-duplicate drop "
            "to drop the transitions that use them (they are counted in the summary)")


def _check_clocks(reference: Track, track: Track, series: Mapping[str, TimeSeries],
                  span: tuple[int, int] | None = None) -> None:
    """Refuse two tracks whose stamps never come near each other: different clocks, e.g. header
    stamps in sim time against receive stamps in wall time. `span` is the reference's grid."""
    ref = series[reference.name].stamps
    lo, hi = span or (int(ref[0]), int(ref[-1]))
    stamps = series[track.name].stamps
    slack = round(max(reference.max_age, track.max_age) * NS)
    if stamps[-1] >= lo - slack and stamps[0] <= hi + slack:
        return
    raise AlignmentError(
        f"the stamps of {track.label} ({_clock(track, stamps[0], stamps[-1])}) never overlap those of "
        f"{reference.label} ({_clock(reference, lo, hi)}): the streams are on different clocks, or were not "
        "recorded at the same time. Stamp them from one clock: `stamp: receive` on both (the bag's receive "
        "times), or record with use_sim_time so header stamps and receive times are both sim time")


def _clock(track: Track, first: int, last: int) -> str:
    source = f"{track.stamp} stamps, " if track.stamp else ""
    if first < WALL_CLOCK_MIN_NS:
        return f"{source}{first / NS:.3f} s to {last / NS:.3f} s since zero: sim time"
    when = lambda ns: datetime.fromtimestamp(ns / NS, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")  # noqa: E731
    return f"{source}{when(first)} to {when(last)} UTC: wall time"


def _usable(checks: list[tuple[str, str, str, np.ndarray]], flaws: Mapping[str, list[tuple[str, np.ndarray]]],
            limits: Mapping[str, str], dropped: dict[str, int]) -> np.ndarray:
    """Transitions whose every sample is fresh and unflawed; each dropped one is counted
    once, under the first check it fails."""
    keep = np.ones(len(checks[0][3]), dtype=bool)
    for label, name, _, idx in checks:
        stale = idx < 0
        reasons = [(f"no {label} within {limits[name]}", stale)]
        for flaw, bad_sample in flaws[name]:
            bad = np.zeros(len(idx), dtype=bool)
            bad[~stale] = bad_sample[idx[~stale]]
            reasons.append((f"{flaw} {label}", bad))
        for reason, mask in reasons:
            if (keep & mask).any():
                dropped[reason] = dropped.get(reason, 0) + int((keep & mask).sum())
            keep &= ~mask
    return keep


def _timeouts(kept: np.ndarray, episode: np.ndarray) -> np.ndarray:
    """A kept transition is a time-out unless the next one of its episode's grid is kept too."""
    timeouts = np.ones(len(kept))
    timeouts[:-1] = (kept[1:] != kept[:-1] + 1) | (episode[kept[1:]] != episode[kept[:-1]])
    return timeouts


def spec_tracks(spec: TaskSpec, series: Mapping[str, TimeSeries]) -> tuple[list[Track], Track, list[Track]]:
    """(states, command, signals) of `spec`'s topic streams, each with its own max age or hold:
    the inputs the observation needs are states (they cut episodes and are read at k and
    k+1); inputs that only feed reward or margin are signals (read at k)."""
    streams = spec.topic_streams()
    track = lambda role: Track(role, series[role], spec.max_age_of(role),  # noqa: E731
                               streams[role].topic, streams[role].stamp)
    states = spec.state_inputs()
    return ([track(role) for role in states], track("command"),
            [track(role) for role in streams if role not in states and role != "command"])


def build_transitions(spec: TaskSpec, series: dict[str, TimeSeries], on_nonfinite: str = "refuse",
                      on_duplicate: str = "refuse") -> tuple[dict[str, np.ndarray], AlignmentReport]:
    """Dataset arrays (data.Dataset fields) from the spec's topic streams, and a report.

    `series` holds one TimeSeries per role of `spec.topic_streams()` (the raw values of
    `Stream.read`), in arrival order; the spec turns the aligned raw values into
    observations, reward and margin, through the same code the node uses.
    """
    states, command, signals = spec_tracks(spec, series)
    aligned = align(states, command, signals, control_period=spec.control_period,
                    on_nonfinite=on_nonfinite, on_duplicate=on_duplicate)
    report = aligned.report
    now = {t.name: aligned.at(t.name) for t in (*states, *signals)}
    raw_actions = spec.scale_action(aligned.series["command"].values[aligned.command])
    actions = np.clip(raw_actions, -1.0, 1.0)
    report.clipped_actions = int((actions != raw_actions).any(axis=1).sum())
    rewards, margins = spec.signals(now)
    arrays = {
        "observations": spec.observations(now),
        "next_observations": spec.observations({t.name: aligned.after(t.name) for t in states}),
        "actions": actions,
        "rewards": rewards,
        "costs": (margins > 0).astype(np.float64),
        "margins": margins,
        "terminals": np.zeros(len(aligned.timeouts)),
        "timeouts": aligned.timeouts,
    }
    return {k: v.astype(np.float32) for k, v in arrays.items()}, report

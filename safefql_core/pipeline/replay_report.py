"""A recording through the deployed decision, written as a report (the `replay` step; its
command is offline_train.replay, whose description says what the report holds).

The bag is read and aligned exactly as the conversion does it (same task spec, same code);
each recorded episode goes through a fresh runtime seeded by `seed`: open loop at every
recorded state, and closed loop (boat only: it needs the simulator) from each episode's
first state. The report is replay.json, ticks.csv, safety.png and (boat) map.png.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from safefql_core import replay
from safefql_core.bags import content_hash
from safefql_core.bundle import BundleError, load_bundle
from safefql_core.pipeline.convert import ERRORS as CONVERT_ERRORS
from safefql_core.pipeline.convert import BagOptions, read_aligned
from safefql_core.runtime import Runtime, RuntimeConfig
from safefql_core.tasks import TaskSpec

ERRORS = (*CONVERT_ERRORS, BundleError, replay.ReplayError)
SAFETY_PLOT_EPISODES = 4  # episodes with violations first, then the first ones
MAP_EPISODES = 20         # more trajectories than this make the map unreadable


@dataclass(frozen=True)
class ReplayOptions:
    """What to replay through what, and where the report goes: `replay`'s flags."""

    bag: str
    bundle: str
    out: str
    config: str | None = None       # a task YAML whose spec must match the bundle's (default: the bundle's)
    seed: int = 0                   # each episode's runtime seed
    episodes: int | None = None     # only the first N recorded episodes
    closed_loop: bool = True        # re-simulate each episode (where the robot has a simulator)
    bag_options: BagOptions = BagOptions()
    progress: bool = True


def run(opts: ReplayOptions) -> dict:
    """Load, replay both ways, write the report files; returns replay.json's content."""
    bundle = load_bundle(opts.bundle)
    spec = bundle.task_spec(TaskSpec.load(opts.config) if opts.config else None)
    replay.check_compatible(bundle, spec)
    arrays, alignment, sources = read_aligned(opts.bag, spec, opts.bag_options, opts.progress)
    episodes = replay.segments(arrays["timeouts"])[:opts.episodes]
    fresh = lambda: Runtime(bundle, RuntimeConfig(seed=opts.seed))  # noqa: E731  (the bundle's decision)
    threshold = bundle.threshold  # RuntimeConfig(threshold=None): the runtime uses the bundle's δ*
    logged = [np.concatenate([arrays["observations"][s], arrays["next_observations"][s][-1:]]) for s in episodes]
    progress = _progress(sum(s.stop - s.start for s in episodes), opts.progress)

    progress.set_description("open loop")
    opened = [replay.open_loop(fresh(), arrays["observations"][s], arrays["actions"][s], progress.update)
              for s in episodes]
    open_rows = [{"episode": i, "first_tick": s.start,
                  **replay.open_loop_row(r, arrays["actions"][s], arrays["margins"][s], threshold)}
                 for i, (s, r) in enumerate(zip(episodes, opened))]

    no_simulator = replay.simulator_missing(bundle, spec)
    closed = None
    closed_section: dict[str, Any] = {"skipped": no_simulator if opts.closed_loop else "--no-closed-loop given"}
    if closed_section["skipped"] is None:
        progress.reset()
        progress.set_description("closed loop")
        closed = [replay.closed_loop(fresh(), traj[0], len(traj) - 1, progress.update) for traj in logged]
        rows = [closed_row(i, traj, arrays["rewards"][s], arrays["costs"][s], c)
                for i, (s, traj, c) in enumerate(zip(episodes, logged, closed))]
        closed_section = {"episodes": rows, "summary": replay.closed_loop_summary(rows)}
    progress.close()

    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "bag": str(Path(opts.bag).resolve()), "bag_content_hash": content_hash(sources),
        "bundle": str(Path(opts.bundle).resolve()), "algo": bundle.algo, "task": spec.name,
        "threshold": threshold, "decision": bundle.decision.to_dict(), "decision_warnings": fresh().warnings,
        "seed": opts.seed, "control_period": spec.control_period,
        "alignment": {"episodes": alignment.episodes, "ticks": alignment.ticks,
                      "transitions": alignment.transitions, "dropped": alignment.dropped},
        "open_loop": {"episodes": open_rows, "summary": replay.open_loop_summary(open_rows)},
        "closed_loop": closed_section,
        "files": ["replay.json", "ticks.csv", "safety.png"] + ([] if no_simulator else ["map.png"]),
    }
    (out / "replay.json").write_text(json.dumps(report, indent=1))
    write_ticks(out / "ticks.csv", spec, arrays, episodes, opened)
    shown = sorted(sorted(range(len(episodes)), key=lambda i: open_rows[i]["violating_ticks"] == 0)
                   [:SAFETY_PLOT_EPISODES])
    replay.plot_safety(str(out / "safety.png"), [(i, opened[i], arrays["margins"][episodes[i]]) for i in shown],
                       threshold, spec.control_period, len(episodes))
    if not no_simulator:  # the map is the boat's
        replay.plot_map(str(out / "map.png"), logged[:MAP_EPISODES], [r.intervened for r in opened[:MAP_EPISODES]],
                        closed and closed[:MAP_EPISODES], map_title(report, len(logged)))
    return report


def closed_row(episode: int, logged: np.ndarray, rewards: np.ndarray, costs: np.ndarray, closed: dict) -> dict:
    """One episode's outcome, recorded vs re-simulated under the decision."""
    return {"episode": episode, "steps": len(logged) - 1, "initial_state": logged[0].tolist(),
            "logged": replay.outcome(logged, rewards, costs),
            "closed_loop": {**replay.outcome(closed["states"], closed["rewards"], closed["costs"]),
                            "interventions": int(np.isin(closed["modes"], replay.INTERVENTIONS).sum())}}


def _progress(total: int, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, unit="tick", disable=not enabled, mininterval=1.0)


def write_ticks(path: Path, spec: TaskSpec, arrays: dict[str, np.ndarray], episodes: list[slice],
                opened: list[replay.OpenLoop]) -> None:
    """One row per open-loop tick, for a spreadsheet or pandas; actions in the policy's [-1, 1] scale."""
    acts = spec.command.names
    header = (["episode", "tick", "time_s", *spec.observation_names, *(f"logged.{a}" for a in acts),
               *(f"policy.{a}" for a in acts), "q_logged", "q_safe", "v_safe", "margin_to_threshold",
               "l", "mode", "reason"])
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for e, (s, r) in enumerate(zip(episodes, opened)):
            numbers = np.column_stack([arrays["observations"][s], arrays["actions"][s], r.policy_actions,
                                       r.q_logged, r.q_safe, r.v_safe, r.margin, arrays["margins"][s]])
            for k, (row, mode, reason) in enumerate(zip(numbers, r.modes, r.reasons)):
                writer.writerow([e, k, f"{k * spec.control_period:.6g}", *(f"{v:.6g}" for v in row), mode, reason])


def map_title(report: dict, episodes: int) -> str:
    shown = f" (first {MAP_EPISODES} of {episodes})" if episodes > MAP_EPISODES else ""
    return f"{Path(report['bag']).name} through {report['algo']} bundle, δ*={report['threshold']:.3g}{shown}"


def describe(report: dict, out: str) -> str:
    """The few numbers a user reads first; replay.json has the rest."""
    o = report["open_loop"]["summary"]
    lines = [
        f"replayed {report['bag']} ({o['episodes']} episode(s), {o['ticks']:,} ticks) through {report['bundle']} "
        f"({report['algo']}, δ*={report['threshold']:.4g}, seed {report['seed']})",
        f"  open loop: mean |Δa| {o['mean_abs_action_diff']:.3f}; the check would refuse the logged action on "
        f"{o['logged_failed_check_fraction']:.1%} of ticks; modes {o['modes']}; {o['interventions']:,} interventions",
        f"  logged violations: {o['violating_ticks']:,} tick(s) in {o['violation_episodes']} episode(s), "
        f"{o['violating_ticks_flagged']:,} entered by a refused action; warning lead (ticks) {o['warning_lead_ticks']}",
        *(f"  warning: {w}" for w in report["decision_warnings"]),
    ]
    closed = report["closed_loop"]
    if closed.get("skipped"):
        lines.append(f"  closed loop: skipped ({closed['skipped']})")
    else:
        c, lg = closed["summary"]["closed_loop"], closed["summary"]["logged"]
        lines.append(f"  closed loop vs logged: return {c['return']:.1f} vs {lg['return']:.1f}; violating steps "
                     f"{c['violating_steps']:,} vs {lg['violating_steps']:,}; reached goal {c['reached_goal']} vs "
                     f"{lg['reached_goal']} of {closed['summary']['episodes']}")
    lines.append(f"  report in {out}: {', '.join(report['files'])}")
    return "\n".join(lines)


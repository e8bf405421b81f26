"""Replay of a recorded run through the deployed decision, without ROS (ARCHITECTURE.md, "Data flow").

Before a policy drives the robot, its decisions are checked against what the robot did.
*Open loop*: at every recorded state, what would `Runtime.decide` have sent, and would the
calibrated check have refused the action that was actually logged (Q_safe(s, a_logged) ≥ δ*)?
*Closed loop*: each recorded episode re-simulated from its first state under the decision
(only where a simulator of the task exists: the boat), compared with the recording.

The input is the converter's aligned transitions (`alignment.build_transitions`), so a tick
here is a transition of the dataset the bag converts to, and a recorded episode is a run of
transitions without a gap. Every kept tick's state is at most max_age old by construction,
so `decide` gets no age: the stale-state stop cannot fire on them (the ticks the converter
dropped are counted in the report's `alignment`). Each episode gets a fresh `Runtime` with
the same seed, so its result does not depend on which other episodes were replayed before it.
`python -m offline_train.replay` is the CLI around this module.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from safefql_core.bundle import Bundle
from safefql_core.envs import boat
from safefql_core.runtime import Mode, Runtime
from safefql_core.tasks import TaskSpec, simulator_mismatch

INTERVENTIONS = (Mode.INTERVENE.value, Mode.UNSAFE.value)  # the runtime did not send the actor's action
Tick = Callable[[], object]  # progress callback, called once per decision


class ReplayError(ValueError):
    """A bag and a bundle that cannot be replayed together; the message names both sides."""


def check_compatible(bundle: Bundle, spec: TaskSpec) -> None:
    """The bundle must have been trained on the task and the observation/action sizes of the spec."""
    task = bundle.meta["task"].get("name")
    problems = [f"task '{task}' vs '{spec.name}'"] if task != spec.name else []
    problems += [f"{what} size {got} vs {want} ({names})" for what, got, want, names in (
        ("observation", bundle.obs_dim, spec.obs_dim, spec.observation_names),
        ("action", bundle.act_dim, spec.act_dim, spec.command.names)) if got != want]
    if problems:
        raise ReplayError(f"bundle {bundle.path} does not fit the bag's task spec: {'; '.join(problems)} "
                          "(bundle vs spec); pass the bundle trained on this task, or the matching --config")


def simulator_missing(bundle: Bundle, spec: TaskSpec) -> str | None:
    """Why the closed loop cannot run for this task and spec, or None when the boat simulator
    is its robot (tasks.simulator_mismatch: never another task's simulator)."""
    task = bundle.meta["task"].get("name")
    why = simulator_mismatch(task, spec.to_dict()) or (None if task == "boat" else
                                                       f"task '{task}' has no simulator here (only 'boat' does)")
    return None if why is None else f"closed loop needs a simulator; {why}"


def segments(timeouts: np.ndarray) -> list[slice]:
    """Recorded episodes as slices of the transitions: the converter ends each run without a
    gap (an episode end, or a tick it had to drop) with a time-out."""
    ends = np.flatnonzero(timeouts) + 1
    return [slice(int(a), int(b)) for a, b in zip(np.r_[0, ends[:-1]], ends)]


@dataclass
class OpenLoop:
    """Per-tick results of one recorded episode."""

    policy_actions: np.ndarray  # [T, act]: what the decision would have sent
    q_safe: np.ndarray          # Q_safe of the sent action
    v_safe: np.ndarray
    margin: np.ndarray          # δ* − q_safe (Decision.margin)
    modes: list[str]
    reasons: list[str]
    q_logged: np.ndarray        # Q_safe(s, a_logged): the check applied to what the robot did

    @property
    def intervened(self) -> np.ndarray:
        return np.isin(self.modes, INTERVENTIONS)


def open_loop(runtime: Runtime, observations: np.ndarray, actions: np.ndarray, tick: Tick) -> OpenLoop:
    """The decision at every recorded state, and the runtime's safety score of the logged action
    there (`Runtime.score`: the graph and threshold of its own check)."""
    decisions, q_logged = [], []
    for o, a in zip(observations.astype(np.float32), actions):
        decisions.append(runtime.decide(o))
        q_logged.append(float(runtime.score(o[None], a)[0][0]))
        tick()
    return OpenLoop(np.array([d.action for d in decisions]), np.array([d.q_safe for d in decisions]),
                    np.array([d.v_safe for d in decisions]), np.array([d.margin for d in decisions]),
                    [d.mode.value for d in decisions], [d.reason for d in decisions], np.array(q_logged))


def warning_lead(failed: np.ndarray, violating: np.ndarray) -> int | None:
    """Ticks of warning before the first violating tick: the length of the uninterrupted run of
    refused logged actions (Q_safe ≥ δ*) that ends just before it — 0 when the action that led
    into the violation passed the check; None without a violation. A run counts only if it
    reaches the violation, so an unrelated refusal long before does not pass for a warning."""
    if not violating.any():
        return None
    first = int(np.argmax(violating))
    passed = np.flatnonzero(~failed[:first])
    return first - (int(passed[-1]) + 1 if len(passed) else 0)


def open_loop_row(result: OpenLoop, actions: np.ndarray, margins: np.ndarray, threshold: float) -> dict:
    """One episode's open-loop numbers: agreement, check on logged actions, modes, violations."""
    failed, violating = result.q_logged >= threshold, margins > 0
    first = int(np.argmax(violating)) if violating.any() else None
    return {
        "ticks": len(actions),
        "mean_abs_action_diff": float(np.linalg.norm(result.policy_actions - actions, axis=1).mean()),
        "logged_failed_check": int(failed.sum()),
        "modes": dict(sorted(Counter(result.modes).items())),
        "interventions": int(result.intervened.sum()),
        "violating_ticks": int(violating.sum()),
        # the logged action that led into a violating state had already been refused by the check
        "violating_ticks_flagged": int((violating[1:] & failed[:-1]).sum()),
        "first_violation_tick": first,
        "warning_lead_ticks": warning_lead(failed, violating),
    }


def open_loop_summary(rows: list[dict]) -> dict:
    """Totals over episodes (tick-weighted means)."""
    ticks = sum(r["ticks"] for r in rows)
    modes: Counter = Counter()
    for r in rows:
        modes.update(r["modes"])
    leads = [r["warning_lead_ticks"] for r in rows if r["warning_lead_ticks"] is not None]
    total = lambda key: sum(r[key] for r in rows)  # noqa: E731
    return {
        "episodes": len(rows),
        "ticks": ticks,
        "mean_abs_action_diff": sum(r["mean_abs_action_diff"] * r["ticks"] for r in rows) / ticks,
        "logged_failed_check_fraction": total("logged_failed_check") / ticks,
        "modes": dict(sorted(modes.items())),
        "interventions": total("interventions"),
        "violating_ticks": total("violating_ticks"),
        "violating_ticks_flagged": total("violating_ticks_flagged"),
        "violation_episodes": len(leads),
        "warning_lead_ticks": leads,
    }


def closed_loop(runtime: Runtime, initial_state: np.ndarray, steps: int, tick: Tick) -> dict[str, np.ndarray]:
    """One boat episode from `initial_state` under batch-1 decisions, as the node would run it."""
    env = boat.BoatEnv(1)
    obs = env.reset(initial_state[None])
    states, rewards, costs, modes = [obs[0]], [], [], []
    for _ in range(steps):
        d = runtime.decide(obs[0])
        obs, reward, cost, _, _, _ = env.step(d.action)
        states.append(obs[0])
        rewards.append(reward[0])
        costs.append(cost[0])
        modes.append(d.mode.value)
        tick()
    return {"states": np.array(states), "rewards": np.array(rewards), "costs": np.array(costs),
            "modes": np.array(modes)}


def outcome(states: np.ndarray, rewards: np.ndarray, costs: np.ndarray) -> dict:
    """Return, violating steps and goal of one trajectory (states s_0..s_T)."""
    return {"return": float(np.sum(rewards, dtype=np.float64)), "violating_steps": int(np.sum(costs > 0)),
            "reached_goal": bool(boat.reached_goal(states))}


def closed_loop_summary(rows: list[dict]) -> dict:
    """Totals over episodes, recorded vs re-simulated (reached_goal: how many episodes)."""
    return {"episodes": len(rows)} | {side: {key: sum(r[side][key] for r in rows)
                                             for key in ("return", "violating_steps", "reached_goal")}
                                       for side in ("logged", "closed_loop")}


# ---- plots --------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_map(path: str, logged: list[np.ndarray], logged_flags: list[np.ndarray],
             closed: list[dict] | None, title: str) -> None:
    """Logged (solid) and closed-loop (dashed) trajectories on the boat map; × where the decision
    would have intervened at a logged state, • where it intervened in the closed loop."""
    from safefql_core.evaluation import draw_boat_map
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9.6, 5.6))
    draw_boat_map(ax)
    for i, (traj, flags) in enumerate(zip(logged, logged_flags)):
        ax.plot(traj[:, 0], traj[:, 1], color="tab:blue", lw=0.9, label="logged" if i == 0 else None)
        ax.plot(*traj[0], "ko", ms=3, label="start" if i == 0 else None)
        ax.plot(traj[:-1][flags, 0], traj[:-1][flags, 1], "x", color="tab:red", ms=3,
                label="would intervene (open loop)" if i == 0 else None)
    for i, run in enumerate(closed or []):
        s, flags = run["states"], np.isin(run["modes"], INTERVENTIONS)
        ax.plot(s[:, 0], s[:, 1], "--", color="tab:orange", lw=0.9, label="closed loop" if i == 0 else None)
        ax.plot(s[:-1][flags, 0], s[:-1][flags, 1], ".", color="tab:purple", ms=3,
                label="intervened (closed loop)" if i == 0 else None)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_safety(path: str, episodes: list[tuple[int, OpenLoop, np.ndarray]], threshold: float,
                period: float, total: int) -> None:
    """Per episode over time: Q_safe of the sent and of the logged action against δ*, the true
    margin l(s), and the ticks where the decision intervened (shaded). The title says how many
    of the `total` episodes are shown."""
    plt = _pyplot()
    height = 2.4 * len(episodes) + 0.7  # 0.7 in on top for the title and the shared legend
    fig, axes = plt.subplots(len(episodes), 1, figsize=(8, height), sharex=True, squeeze=False)
    for ax, (index, result, margins) in zip(axes[:, 0], episodes):
        t = np.arange(len(margins)) * period
        ax.plot(t, result.q_safe, lw=0.9, label="Q_safe (sent)")
        ax.plot(t, result.q_logged, lw=0.9, label="Q_safe (logged action)")
        ax.plot(t, margins, lw=0.9, color="k", label="l(s) (true margin)")
        ax.axhline(threshold, color="tab:red", ls="--", lw=0.8, label="δ*")
        ax.fill_between(t, 0, 1, where=result.intervened, transform=ax.get_xaxis_transform(),
                        color="tab:purple", alpha=0.15, lw=0, label="intervention")
        ax.set_title(f"episode {index}", fontsize=8)
        ax.set_ylabel("safety value\n(> 0 unsafe)", fontsize=8)
    axes[-1, 0].set_xlabel("time in episode (s)")
    shown = (f"all {total} episodes" if len(episodes) == total else
             f"{len(episodes)} of {total} episodes: those with violations first, then the first ones")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.7 / height))
    fig.suptitle(f"Q_safe above δ* is refused; {shown}", fontsize=9, y=1 - 0.08 / height, va="top")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="upper center", ncol=5, fontsize=7,
               bbox_to_anchor=(0.5, 1 - 0.32 / height))
    fig.savefig(path, dpi=110)
    plt.close(fig)

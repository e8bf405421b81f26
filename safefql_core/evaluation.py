"""Closed-loop evaluation on the boat simulator: rollouts, summary statistics, a map plot.

Doomed initial states (no safe path exists whatever the policy does) are reported
separately under `feasible`, never silently dropped: the headline numbers cover every
state, the `feasible` block only those from which safety was achievable.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from safefql_core.envs import boat
from safefql_core.learners import Learner
from safefql_core.plots import save_map

Policy = Callable[[np.ndarray], np.ndarray]


def torch_policy(learner: Learner, noise: str = "zero", seed: int = 0) -> Policy:
    """Wrap a learner's batched act() as a numpy policy; noise 'zero' or 'sample' (seeded)."""
    gen = torch.Generator().manual_seed(seed)

    def act(obs: np.ndarray) -> np.ndarray:
        o = torch.as_tensor(obs, dtype=torch.float32)
        z = torch.randn(o.shape[0], learner.act_dim, generator=gen) if noise == "sample" else None
        return learner.act(o, z).numpy().astype(np.float64)

    return act


def runtime_policy(runtime, q_safe: list[np.ndarray] | None = None) -> tuple[Policy, Counter]:
    """The deployed per-tick decision as a batched policy (one decide() per boat per tick).

    Returns the policy and a Counter of the decision modes it produced, so an evaluation
    can report how often the calibrated check intervened. With a `q_safe` list, each tick's
    Q_safe of the sent actions is appended to it (calibration scores the first).
    """
    modes: Counter = Counter()

    def act(obs: np.ndarray) -> np.ndarray:
        decisions = [runtime.decide(o) for o in obs]
        modes.update(d.mode.value for d in decisions)
        if q_safe is not None:
            q_safe.append(np.array([d.q_safe for d in decisions]))
        return np.stack([d.action for d in decisions])   # act_dim, not obs_dim, columns

    return act, modes


def rollout(policy: Policy, initial_states: np.ndarray, keep_trajectories: bool = False,
            steps: int = boat.EPISODE_STEPS) -> dict[str, np.ndarray]:
    """Run one episode of `steps` steps from each initial state in parallel."""
    env = boat.BoatEnv(len(initial_states), episode_steps=steps)
    obs = env.reset(initial_states)
    returns = np.zeros(len(obs))
    violations = np.zeros(len(obs))
    max_margin = np.full(len(obs), -np.inf)
    goal_distance = boat.goal_distance(obs)
    trajectory = [obs]
    for _ in range(steps):
        obs, rew, cost, _, _, info = env.step(policy(obs))
        returns += rew
        violations += cost
        max_margin = np.maximum(max_margin, info["margin"])
        goal_distance = np.minimum(goal_distance, boat.goal_distance(obs))
        if keep_trajectories:
            trajectory.append(obs)
    out = {"returns": returns, "violations": violations, "max_margin": max_margin, "final_states": obs,
           "goal_reached": goal_distance <= boat.GOAL_RADIUS}
    if keep_trajectories:
        out["trajectories"] = np.stack(trajectory, axis=1)
    return out


def max_margins(policy: Policy, initial_states: np.ndarray, steps: int) -> np.ndarray:
    """Each episode's max margin: the boat's closed loop as calibration uses it
    (decision_calibration.ClosedLoop)."""
    return rollout(policy, initial_states, steps=steps)["max_margin"]


def learning_curve_evaluator(initial_states: np.ndarray, feasible: np.ndarray) -> Callable[[Learner], dict]:
    """For `fit --eval-every`: the deterministic actor's return and zero-violation rate over
    the feasible initial states. It leaves torch's global generator as it found it, so
    training is unchanged by it."""

    def evaluate(learner: Learner) -> dict[str, float]:
        with torch.random.fork_rng(devices=[]):  # FISOR's candidates draw from the global generator
            stats = _stats(rollout(torch_policy(learner), initial_states), feasible)
        return {"return": stats["mean_return"], "zero_violation": stats["zero_violation_rate"],
                "violations": stats["mean_violations"]}

    return evaluate


def _stats(result: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, float]:
    returns, violations = result["returns"][keep], result["violations"][keep]
    if len(returns) == 0:
        return {"count": 0}
    return {
        "count": int(len(returns)),
        "mean_return": float(returns.mean()),
        "median_return": float(np.median(returns)),
        "mean_violations": float(violations.mean()),
        "zero_violation_rate": float((violations == 0).mean()),
        "goal_reached_rate": float(result["goal_reached"][keep].mean()),
    }


def summarize(result: dict[str, np.ndarray], feasible: np.ndarray) -> dict:
    """Headline numbers over all states, plus the `feasible` and `doomed` blocks."""
    summary: dict[str, Any] = _stats(result, np.ones_like(feasible))
    summary["feasible"] = _stats(result, feasible)
    summary["doomed"] = {**_stats(result, ~feasible), "indices": np.flatnonzero(~feasible).tolist()}
    return summary


def plot_trajectories(path: str, trajectories: np.ndarray, violations: np.ndarray,
                      feasible: np.ndarray, title: str, draw_map: Callable[[Any], None] | None = None) -> None:
    """Map of the task (`draw_map`, the boat's by default) with every trajectory: green safe,
    red violating, a dot at each start (a purple cross where the start is doomed); the legend
    says so, with counts."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(9.6, 5.6))
    (draw_map or draw_boat_map)(ax)
    for traj, v, ok in zip(trajectories, violations, feasible):
        colour = "tab:red" if v > 0 else "tab:green"
        ax.plot(traj[:, 0], traj[:, 1], color=colour, lw=0.6, alpha=0.5 if v == 0 else 0.9)
        ax.plot(*traj[0], marker="o" if ok else "x", ms=2.5 if ok else 6, mew=1.5, color="k" if ok else "tab:purple")
    violating, doomed = int((np.asarray(violations) > 0).sum()), int((~np.asarray(feasible, bool)).sum())
    keys = [Line2D([], [], color="tab:green", lw=1.2, label=f"no violation ({len(violations) - violating})"),
            Line2D([], [], color="tab:red", lw=1.2, label=f"entered an obstacle ({violating})"),
            Line2D([], [], ls="", marker="o", ms=4, color="k", label="start")]
    if doomed:
        keys.append(Line2D([], [], ls="", marker="x", ms=5, color="tab:purple",
                           label=f"doomed start ({doomed}): no action avoids a collision"))
    save_map(fig, ax, keys, title, path)


def plot_learning_curve(csv_path: str | Path, png_path: str | Path) -> None:
    """eval.csv (fit --eval-every) as two panels over training steps: return and the
    zero-violation rate of the actor on the feasible validation starts (fit.CURVE_STATES)."""
    import csv

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
    top.plot(steps, [float(r["return"]) for r in rows], marker="o", color="tab:blue")
    top.set_ylabel("mean return")
    bottom.plot(steps, [100 * float(r["zero_violation"]) for r in rows], marker="o", color="tab:green")
    bottom.set_ylabel("zero-violation episodes (%)")
    bottom.set_xlabel("gradient step")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    top.set_title("learning curve on the feasible validation starts", fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


def draw_boat_map(ax) -> None:
    """The boat task's fixed scenery on a matplotlib axes: obstacles, the goal and the region
    that counts as reaching it (boat.GOAL_RADIUS), the box; shared by every boat map plot."""
    import matplotlib.pyplot as plt

    for i, (c, r) in enumerate(zip(boat.OBSTACLE_CENTRES, boat.OBSTACLE_RADII)):
        ax.add_patch(plt.Circle(tuple(c), r, color="0.25", alpha=0.6, label="obstacle (unsafe)" if i == 0 else None))
    ax.add_patch(plt.Circle(tuple(boat.GOAL), boat.GOAL_RADIUS, fill=False, ls="--", lw=0.8, color="goldenrod",
                            label=f"goal region (within {boat.GOAL_RADIUS:g} of the goal)"))
    ax.plot(*boat.GOAL, ls="", marker="*", ms=16, color="gold", mec="k", label="goal", zorder=5)  # above the paths
    ax.set_xlim(boat.LOW[0], boat.HIGH[0])
    ax.set_ylim(boat.LOW[1], boat.HIGH[1])
    ax.set_aspect("equal")
    ax.set_xlabel("x  (current flows to +x)")
    ax.set_ylabel("y")

"""Closed-loop evaluation on Safety Gymnasium tasks, scored raw and DSRL-normalised.

The boat has a fixed set of initial states (safefql_core.evaluation); a Safety Gymnasium
task instead draws its layout from the reset seed, so an evaluation here is `episodes`
resets with seeds seed, seed+1, ...: the same seeds give the same layouts to every method.
All episodes run in lockstep, one environment each, so the policy sees one batch per
tick (one forward pass instead of `episodes`).

Scores per episode: return R and cost C (the sum of the task's 0/1 costs, i.e. violating
steps), normalised as DSRL does (safefql_core.envs.dsrl) at every budget of `dsrl.BUDGETS`.
"""
from __future__ import annotations

import numpy as np

from safefql_core.envs import dsrl
from safefql_core.envs.safety_gym import make_env
from safefql_core.evaluation import Policy


def rollout(policy: Policy, task: str, episodes: int, seed: int,
            max_episode_steps: int | None = None, action_repeat: int = 1) -> dict[str, np.ndarray]:
    """Run `episodes` episodes (reset seeds seed..seed+episodes-1) to their end.

    `action_repeat` K: the policy decides every K steps and its action is held in between,
    as in data collected with `collect --action-repeat K`; scores still count every step.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    if action_repeat < 1:
        raise ValueError(f"action_repeat must be at least 1, got {action_repeat}")
    envs = [make_env(task, seed + i, max_episode_steps) for i in range(episodes)]
    try:
        obs = np.stack([env.reset() for env in envs])
        low, high = envs[0].action_low, envs[0].action_high
        returns, costs, lengths = np.zeros(episodes), np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
        active = np.ones(episodes, dtype=bool)
        while active.any():
            idx = np.flatnonzero(active)
            # Learners act in [-1, 1] (the datasets' action scale for these tasks); the
            # adapter clips to the task's bounds.
            actions = np.clip(policy(obs[idx]), low, high)
            for i, action in zip(idx, actions):
                obs[i], reward, cost, terminated, truncated, _, ticks = envs[i].hold(action, action_repeat)
                returns[i] += reward
                costs[i] += cost
                lengths[i] += ticks
                active[i] = not (terminated or truncated)
    finally:
        for env in envs:
            env.close()
    return {"returns": returns, "costs": costs, "lengths": lengths}


def summarize(result: dict[str, np.ndarray], task: str) -> dict:
    """Mean and std of raw and normalised scores; `normalized_cost` is the headline budget's."""
    returns, costs = result["returns"], result["costs"]

    def stats(x: np.ndarray) -> dict[str, float]:
        return {"mean": float(np.mean(x)), "std": float(np.std(x))}

    summary = {
        "count": int(len(returns)),
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        # Violating steps per episode: the boat's `mean_violations`, so tables line up.
        "mean_violations": float(costs.mean()),
        "zero_violation_rate": float((costs == 0).mean()),
        "mean_length": float(result["lengths"].mean()),
        "costs": costs.tolist(),
        "returns": returns.tolist(),
    }
    if task in dsrl.REFERENCES:
        summary["normalized_reward"] = stats(dsrl.normalized_reward(returns, task))
        summary["normalized_cost_by_budget"] = {
            f"{b:g}": stats(dsrl.normalized_cost(costs, b)) for b in dsrl.BUDGETS}
        summary["normalized_cost"] = summary["normalized_cost_by_budget"][f"{dsrl.HEADLINE_BUDGET:g}"]
    return summary


def describe(summary: dict) -> str:
    """One line for the terminal."""
    line = (f"{summary['count']} episodes: return {summary['mean_return']:.1f} ± {summary['std_return']:.1f}, "
            f"cost {summary['mean_violations']:.2f}, zero-cost {summary['zero_violation_rate']:.0%}")
    if "normalized_reward" in summary:
        costs = ", ".join(f"κ={b} {v['mean']:.2f}" for b, v in summary["normalized_cost_by_budget"].items())
        line += f" | normalized reward {summary['normalized_reward']['mean']:.3f}, normalized cost {costs}"
    return line

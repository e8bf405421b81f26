"""Closed-loop episodes of a policy on the diff-drive robot, and their summary.

The policy sees what it would see on the robot: `observe` turns the simulator's readings
into the task spec's observation (offline_train builds it from the same Odometry and
LaserScan messages the bags hold, through the spec's own feature code), `act` decides in
[-1, 1], and `to_command` unscales to (v, w) as the spec does for the command message.
Only robots whose episode is still running are asked for a decision.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from safefql_core.envs import diffdrive

Observe = Callable[[diffdrive.Readings], np.ndarray]


def rollout(act: Callable[[np.ndarray], np.ndarray], observe: Observe, to_command: Callable[[np.ndarray], np.ndarray],
            starts: np.ndarray, steps: int = diffdrive.EPISODE_STEPS) -> dict[str, np.ndarray]:
    """One episode from each start pose, all in lockstep: per-episode returns, collisions,
    goal reached (within GOAL_RADIUS at some step) and the closest approach to the goal."""
    n = len(starts)
    env = diffdrive.DiffDriveEnv(n, seed=0, episode_steps=steps)
    readings = env.reset(starts)
    returns, collided = np.zeros(n), np.zeros(n, dtype=bool)
    closest = diffdrive.goal_distance(readings.pose)
    commands = np.zeros((n, 2))
    for _ in range(steps):
        active = np.flatnonzero(env.active)
        if not len(active):
            break
        commands[:] = 0.0
        commands[active] = to_command(act(observe(readings.rows(active))))
        readings, reward, _, terminated, _, _ = env.step(commands)
        returns += reward
        collided |= terminated
        closest = np.where(env.active | terminated, np.minimum(closest, diffdrive.goal_distance(readings.pose)),
                           closest)
    return {"returns": returns, "collided": collided, "goal_reached": closest <= diffdrive.GOAL_RADIUS,
            "closest_goal_distance": closest}


def summarize(result: dict[str, np.ndarray]) -> dict[str, float]:
    """The issue-25 numbers: episodes without a collision, episodes that reached the goal."""
    return {"count": int(len(result["returns"])),
            "zero_collision_rate": float((~result["collided"]).mean()),
            "goal_reached_rate": float(result["goal_reached"].mean()),
            "mean_return": float(result["returns"].mean()),
            "median_closest_goal_distance": float(np.median(result["closest_goal_distance"]))}


def draw_map(ax: Any) -> None:
    """The arena on a matplotlib axes, from the loaded world: obstacles (walls included), the
    goal and the region that counts as reaching it (diffdrive.GOAL_RADIUS)."""
    import matplotlib.pyplot as plt
    import shapely

    w = diffdrive.world()
    for i, part in enumerate(shapely.get_parts(w.obstacles)):
        ax.fill(*part.exterior.xy, color="0.25", alpha=0.6, label="obstacle (unsafe)" if i == 0 else None)
    goal = (float(w.goal[0]), float(w.goal[1]))
    ax.add_patch(plt.Circle(goal, diffdrive.GOAL_RADIUS, fill=False, ls="--", lw=0.8, color="goldenrod",
                            label=f"goal region (within {diffdrive.GOAL_RADIUS:g} m of the goal)"))
    ax.plot(*w.goal, ls="", marker="*", ms=16, color="gold", mec="k", label="goal", zorder=5)
    ax.set_xlim(w.bounds[0, 0] - 0.2, w.bounds[1, 0] + 0.2)
    ax.set_ylim(w.bounds[0, 1] - 0.2, w.bounds[1, 1] + 0.2)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")

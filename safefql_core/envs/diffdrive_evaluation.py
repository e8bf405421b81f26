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
from safefql_core.plots import save_map

Observe = Callable[[diffdrive.Readings], np.ndarray]


def rollout(act: Callable[[np.ndarray], np.ndarray], observe: Observe, to_command: Callable[[np.ndarray], np.ndarray],
            starts: np.ndarray, steps: int = diffdrive.EPISODE_STEPS, keep_trajectories: bool = False,
            margin: Observe | None = None) -> dict[str, np.ndarray]:
    """One episode from each start pose, all in lockstep: per-episode returns, collisions,
    goal reached (within GOAL_RADIUS at some step), the closest approach to the goal and
    `max_margin`, the largest margin after any step of the episode: the simulator's true one
    (the robot's clearance, negated) and, given `margin` (readings -> a spec's margin), that
    one too, whichever is larger; with `keep_trajectories` also every robot's positions
    [n, steps + 1, 2] (a robot whose episode ended stays where it stopped), for a map."""
    n = len(starts)
    env = diffdrive.DiffDriveEnv(n, seed=0, episode_steps=steps)
    readings = env.reset(starts)
    returns, collided = np.zeros(n), np.zeros(n, dtype=bool)
    closest = diffdrive.goal_distance(readings.pose)
    max_margin = np.full(n, -np.inf)
    commands = np.zeros((n, 2))
    trajectory = [readings.pose[:, :2].copy()]
    for _ in range(steps):
        active = np.flatnonzero(env.active)
        if not len(active):
            break
        commands[:] = 0.0
        commands[active] = to_command(act(observe(readings.rows(active))))
        readings, reward, _, terminated, _, info = env.step(commands)
        worst = info["margin"][active]
        if margin is not None:
            worst = np.maximum(worst, margin(readings.rows(active)))
        max_margin[active] = np.maximum(max_margin[active], worst)
        returns += reward
        collided |= terminated
        closest = np.where(env.active | terminated, np.minimum(closest, diffdrive.goal_distance(readings.pose)),
                           closest)
        if keep_trajectories:
            trajectory.append(readings.pose[:, :2].copy())
    out = {"returns": returns, "collided": collided, "goal_reached": closest <= diffdrive.GOAL_RADIUS,
           "closest_goal_distance": closest, "max_margin": max_margin}
    if keep_trajectories:
        out["trajectories"] = np.stack(trajectory, axis=1)
    return out


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
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path

    w = diffdrive.world()
    for i, part in enumerate(shapely.get_parts(w.obstacles)):
        # The walls are one polygon with the arena as its hole: drawn with its holes (rings
        # oriented for the nonzero fill rule), not as its outline, which would cover the arena.
        part = shapely.geometry.polygon.orient(part, 1.0)
        rings = [Path(np.asarray(ring.coords), closed=True) for ring in (part.exterior, *part.interiors)]
        ax.add_patch(PathPatch(Path.make_compound_path(*rings), color="0.25", alpha=0.6, lw=0,
                               label="obstacle (unsafe)" if i == 0 else None))
    goal = (float(w.goal[0]), float(w.goal[1]))
    ax.add_patch(plt.Circle(goal, diffdrive.GOAL_RADIUS, fill=False, ls="--", lw=0.8, color="goldenrod",
                            label=f"goal region (within {diffdrive.GOAL_RADIUS:g} m of the goal)"))
    ax.plot(*w.goal, ls="", marker="*", ms=16, color="gold", mec="k", label="goal", zorder=5)
    ax.set_xlim(w.bounds[0, 0] - 0.2, w.bounds[1, 0] + 0.2)
    ax.set_ylim(w.bounds[0, 1] - 0.2, w.bounds[1, 1] + 0.2)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")


def plot_episodes(path: str, result: dict[str, np.ndarray], title: str) -> None:
    """Map of the arena with every episode's path (`rollout(..., keep_trajectories=True)`),
    coloured by its outcome: reached the goal without a collision, collided, or neither (it
    timed out somewhere, which is where a policy's goal rate is lost); a dot at each start
    and a cross where a robot ended. The legend counts each outcome."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    collided, reached = result["collided"], result["goal_reached"] & ~result["collided"]
    outcomes = [("reached the goal, no collision", "tab:green", reached),
                ("no collision, goal not reached", "tab:orange", ~reached & ~collided),
                ("collided", "tab:red", collided)]
    fig, ax = plt.subplots(figsize=(8.6, 5.6))
    draw_map(ax)
    keys = []
    for label, colour, mask in outcomes:
        for traj in result["trajectories"][mask]:
            ax.plot(traj[:, 0], traj[:, 1], color=colour, lw=0.6, alpha=0.6)
            ax.plot(*traj[0], marker="o", ms=2.5, color="k")
            ax.plot(*traj[-1], marker="x", ms=4, mew=1.2, color=colour)
        keys.append(Line2D([], [], color=colour, lw=1.2, label=f"{label} ({int(mask.sum())})"))
    keys += [Line2D([], [], ls="", marker="o", ms=4, color="k", label="start"),
             Line2D([], [], ls="", marker="x", ms=5, color="0.3", label="where the episode ended")]
    save_map(fig, ax, keys, title, path)

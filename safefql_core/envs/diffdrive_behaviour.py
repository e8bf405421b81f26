"""Scripted behaviour for the diff-drive robot's offline data, and the documented mix.

Like the boat's (boat_behaviour.py), the mix covers both sides of the safety boundary: a
competent planner, sloppy goal-seeking that ignores obstacles, random driving, drives into
obstacles, and drives that alternate between a hazard and an escape from it. Every family
acts on what the robot senses (pose, lidar ranges in LaserScan convention) and the goal,
as a real robot's would; the planner also has a map of the arena (a cost-to-go grid), as a
navigation stack's global planner has.

Families and their shares:
- obstacle_aware (50 %): a navigation stack in small: dynamic-window arcs checked against the
  lidar, the one ending cheapest on a global cost-to-go map of the arena, inflated near obstacles as
  a costmap is (it keeps a median 0.16 m of clearance, not the 0.05 m it must); noise sd ~ U[0, 0.3].
  Half the data, more than the boat's 35 %: the way around the obstacles to the goal is long
  here, and the learner can only reach the goal as well as the data shows it reached.
- goal_noisy (20 %): turns towards the goal and drives, ignores obstacles; noise sd ~ U[0.1, 0.6].
- random (10 %): a random (v, w), redrawn every ~1 s.
- reckless (10 %): turns towards the closest lidar return and drives into it, in half the
  episodes backwards (its back turned to the return): a robot that can reverse must learn what
  reversing into an obstacle costs, and only this family and random driving show it.
- switching (10 %): alternates goal-seeking (or reckless) driving with an escape (the arc of most
  clearance), segments 0.5-3 s.

Noise is added to the action scaled to [-1, 1] and clipped there, so every command is
within the robot's limits. Each episode runs one family from a start pose for
`diffdrive.EPISODE_STEPS` steps or until it collides. Deterministic for a seed.
"""
from __future__ import annotations

import functools
import heapq
from dataclasses import dataclass

import numpy as np

from safefql_core.envs import diffdrive

MIX = {"obstacle_aware": 0.5, "goal_noisy": 0.2, "random": 0.1, "reckless": 0.1, "switching": 0.1}
DEFAULT_EPISODES = 1000     # offline_train.collect's default: ~100k transitions (collisions end episodes early)
CHUNK = 256                 # robots simulated in lockstep (bounds memory; results do not depend on it)
ARC_SPEEDS = (-0.25, 0.0, 0.25, 0.5)    # m/s: the planner's candidate linear velocities
ARC_TURNS = 7                           # candidate angular velocities over [-w_max, w_max]
ARC_STEPS = 12                          # 1.2 s lookahead
ESCAPE_STEPS = 20                       # the escape looks 2 s ahead
SAFETY_BUFFER = 0.05                    # m kept between robot and lidar returns by the planner
# The global map's inflation (as a costmap's inflation layer): a metre of path whose clearance
# beyond SAFETY_BUFFER is under INFLATION costs up to 1 + INFLATION_WEIGHT metres, so the planner
# keeps off obstacles where there is room and squeezes through a gap only when going round is long.
INFLATION = 0.3                         # m
INFLATION_WEIGHT = 4.0
STOP_RADIUS = 0.2                       # m: goal-seeking families stop this close to the goal
RANDOM_HOLD_STEPS = 10
CONTACT_STEPS = 10                      # 1 s recorded in contact after a collision (see Episodes)
GRID = 0.1                              # m: cells of the planner's cost-to-go map
SWITCH_SEGMENT_STEPS = (5, 30)


@dataclass
class Episodes:
    """Behaviour episodes, padded to the longest: what a bag of them holds.

    Episode e has `lengths[e]` commands and `lengths[e] + 1` readings. An episode that
    collided goes on for CONTACT_STEPS more steps with the robot stopped in contact (as a
    recording of a real robot goes on after a bump): without transitions *from* unsafe states
    the data would never show a positive safety margin, and the safety critic would only
    ever extrapolate to them.
    """

    pose: np.ndarray        # [E, T+1, 3]
    velocity: np.ndarray    # [E, T+1, 2]
    ranges: np.ndarray      # [E, T+1, beams]
    commands: np.ndarray    # [E, T, 2] v (m/s), w (rad/s)
    lengths: np.ndarray     # [E]
    family: np.ndarray      # [E] index into MIX
    collided: np.ndarray    # [E] bool
    goal_reached: np.ndarray  # [E] bool: within GOAL_RADIUS of the goal at some step
    returns: np.ndarray     # [E] sum of -|p - goal| over the episode's steps

    def summary(self) -> dict:
        """Rates over the episodes, overall and per family: the behaviour data's numbers."""
        def rates(mask: np.ndarray) -> dict:
            return {"episodes": int(mask.sum()), "zero_collision_rate": float((~self.collided[mask]).mean()),
                    "goal_reached_rate": float(self.goal_reached[mask].mean()),
                    "mean_return": float(self.returns[mask].mean())}
        out = rates(np.ones(len(self.family), dtype=bool))
        out["per_family"] = {name: rates(self.family == i) for i, name in enumerate(MIX) if (self.family == i).any()}
        return out


@functools.cache
def _arcs(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate (v, w) commands [K, 2] and the positions [K, steps, 2] each reaches in the
    robot's frame when held for `steps` steps (IR-SIM's unicycle model, Euler steps)."""
    w = diffdrive.world()
    turns = np.linspace(w.command_low[1], w.command_high[1], ARC_TURNS)
    cand = np.array([(v, om) for v in ARC_SPEEDS for om in turns])
    pos = np.zeros((len(cand), steps, 2))
    x = np.zeros((len(cand), 3))
    for k in range(steps):
        x = x + diffdrive.DT * np.stack([cand[:, 0] * np.cos(x[:, 2]), cand[:, 0] * np.sin(x[:, 2]), cand[:, 1]], -1)
        pos[:, k] = x[:, :2]
    return cand, pos


@functools.cache
def cost_to_go() -> np.ndarray:
    """Cheapest 8-connected path (inflated metres, see INFLATION) from each GRID cell to the goal
    through cells where the robot keeps SAFETY_BUFFER of clearance (inf elsewhere): the planner's
    global map, as a navigation stack's global planner has one of a known building."""
    w = diffdrive.world()
    n = np.round((w.bounds[1] - w.bounds[0]) / GRID).astype(int)
    centres = w.bounds[0] + GRID * (np.stack(np.meshgrid(np.arange(n[0]), np.arange(n[1]), indexing="ij"), -1) + 0.5)
    slack = diffdrive.clearance(centres) - w.robot_radius - SAFETY_BUFFER
    free = slack >= 0
    weight = 1.0 + INFLATION_WEIGHT * np.clip(1.0 - slack / INFLATION, 0.0, 1.0)
    cost = np.full(n, np.inf)
    goal = tuple(np.clip(((w.goal - w.bounds[0]) / GRID).astype(int), 0, n - 1))
    cost[goal] = 0.0
    heap = [(0.0, goal)]
    moves = [(di, dj, GRID * np.hypot(di, dj)) for di in (-1, 0, 1) for dj in (-1, 0, 1) if di or dj]
    while heap:
        c, (i, j) = heapq.heappop(heap)
        if c > cost[i, j]:
            continue
        for di, dj, step in moves:
            a, b = i + di, j + dj
            if 0 <= a < n[0] and 0 <= b < n[1] and free[a, b]:
                to = c + step * 0.5 * (weight[i, j] + weight[a, b])
                if to < cost[a, b]:
                    cost[a, b] = to
                    heapq.heappush(heap, (to, (a, b)))
    return cost


def _cost_at(positions: np.ndarray) -> np.ndarray:
    """cost_to_go at world positions (..., 2), nearest cell; inf outside the arena."""
    w, cost = diffdrive.world(), cost_to_go()
    idx = np.floor((positions - w.bounds[0]) / GRID).astype(int)
    inside = ((idx >= 0) & (idx < cost.shape)).all(axis=-1)
    idx = np.clip(idx, 0, np.array(cost.shape) - 1)
    return np.where(inside, cost[idx[..., 0], idx[..., 1]], np.inf)


def lidar_points(ranges: np.ndarray) -> np.ndarray:
    """Lidar returns [B, beams, 2] in the robot frame; beams without a return are far away."""
    r = np.where(np.isfinite(ranges), ranges, 1e3)
    r = np.where(r < 0, diffdrive.world().range_min, r)   # -inf: an object inside the blind zone
    angles = diffdrive.world().beam_angles
    return np.stack([r * np.cos(angles), r * np.sin(angles)], axis=-1)


def goal_in_robot_frame(pose: np.ndarray) -> np.ndarray:
    d = diffdrive.world().goal - pose[:, :2]
    c, s = np.cos(pose[:, 2]), np.sin(pose[:, 2])
    return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], axis=-1)


def to_world(pose: np.ndarray, local: np.ndarray) -> np.ndarray:
    """Robot-frame points [..., 2] (shared by every robot) -> world frame [B, ..., 2]."""
    c, s = np.cos(pose[:, 2]), np.sin(pose[:, 2])
    shape = (len(pose),) + (1,) * (local.ndim - 1)
    x, y = local[..., 0], local[..., 1]
    return np.stack([pose[:, 0].reshape(shape) + c.reshape(shape) * x - s.reshape(shape) * y,
                     pose[:, 1].reshape(shape) + s.reshape(shape) * x + c.reshape(shape) * y], axis=-1)


def arc_clearance(ranges: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Smallest gap [B, K] between the robot's edge and a lidar return along each arc [K, S, 2]."""
    pts = lidar_points(ranges)                                           # [B, N, 2]
    flat = positions.reshape(-1, 2)                                      # [K*S, 2]
    sq = (flat ** 2).sum(-1)[None, :, None] + (pts ** 2).sum(-1)[:, None, :] - 2 * np.einsum("kd,bnd->bkn", flat, pts)
    nearest = np.sqrt(np.maximum(sq.min(axis=2), 0.0)).reshape(len(ranges), *positions.shape[:2]).min(axis=2)
    return nearest - diffdrive.world().robot_radius


def planner_command(pose: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """Local dynamic-window planner on the lidar, steered by the global cost-to-go: the arc whose
    end is cheapest to the goal among those keeping SAFETY_BUFFER clear of every lidar return."""
    cand, pos = _arcs(ARC_STEPS)
    gap = arc_clearance(ranges, pos)
    to_goal = np.minimum(_cost_at(to_world(pose, pos[:, -1])), 100.0)      # [B, K]
    score = to_goal + 100.0 * (gap < SAFETY_BUFFER) + 0.5 * np.maximum(0.3 - gap, 0.0) + 0.2 * (cand[None, :, 0] < 0)
    command = cand[np.argmin(score, axis=1)]
    return np.where((diffdrive.goal_distance(pose) < STOP_RADIUS)[:, None], 0.0, command)


def escape_command(ranges: np.ndarray) -> np.ndarray:
    """The arc that keeps the most clearance over ESCAPE_STEPS: pure recovery, no goal."""
    cand, pos = _arcs(ESCAPE_STEPS)
    return cand[np.argmax(arc_clearance(ranges, pos), axis=1)]


def _rows(mask: np.ndarray, fn, *args: np.ndarray) -> np.ndarray:
    """fn(*args) on the rows in `mask` only (zeros elsewhere): planners cost most of a step."""
    out = np.zeros((len(mask), 2))
    if mask.any():
        out[mask] = fn(*(a[mask] for a in args))
    return out


def goal_command(pose: np.ndarray) -> np.ndarray:
    """Turn towards the goal, drive when roughly facing it; stop at it."""
    w = diffdrive.world()
    goal = goal_in_robot_frame(pose)
    bearing = np.arctan2(goal[:, 1], goal[:, 0])
    v = w.command_high[0] * np.clip(np.cos(bearing), 0.0, 1.0) * np.clip(np.linalg.norm(goal, axis=1) / 0.5, 0, 1)
    om = np.clip(2.0 * bearing, w.command_low[1], w.command_high[1])
    return np.where((np.linalg.norm(goal, axis=1) < STOP_RADIUS)[:, None], 0.0, np.stack([v, om], -1))


def reckless_command(ranges: np.ndarray, backwards: np.ndarray) -> np.ndarray:
    """Turn towards the closest lidar return and drive at it; where `backwards`, turn the
    robot's back to it and reverse into it."""
    w = diffdrive.world()
    r = np.where(np.isfinite(ranges), ranges, np.inf)
    bearing = w.beam_angles[np.argmin(np.abs(r), axis=1)]
    bearing = np.where(backwards, np.angle(np.exp(1j * (bearing - np.pi))), bearing)   # of the back, wrapped
    speed = np.where(np.abs(bearing) < 0.5, 1.0, 0.2)
    v = np.where(backwards, w.command_low[0], w.command_high[0]) * speed
    return np.stack([v, np.clip(2.0 * bearing, w.command_low[1], w.command_high[1])], -1)


def collect(num_episodes: int, seed: int, starts: np.ndarray | None = None, progress: bool = True) -> Episodes:
    """Roll out the behaviour mix for `num_episodes` episodes (from `starts` if given, else from
    seeded safe starts), CHUNK robots at a time."""
    rng = np.random.default_rng(seed)
    family = rng.choice(len(MIX), size=num_episodes, p=list(MIX.values()))
    if starts is None:
        starts = diffdrive.sample_starts(rng, num_episodes)
    chunks = range(0, num_episodes, CHUNK)
    if progress:
        from tqdm import tqdm
        chunks = tqdm(chunks, desc=f"collect {num_episodes} diff-drive episodes", unit="chunk")
    parts = [_collect_chunk(family[i:i + CHUNK], starts[i:i + CHUNK], np.random.default_rng(rng.integers(2**63)))
             for i in chunks]
    return Episodes(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in Episodes.__dataclass_fields__})


def _collect_chunk(family: np.ndarray, starts: np.ndarray, rng: np.random.Generator) -> Episodes:
    n, steps, w = len(family), diffdrive.EPISODE_STEPS, diffdrive.world()
    names = list(MIX)
    is_family = {name: family == i for i, name in enumerate(names)}
    noise_sd = np.select([is_family["obstacle_aware"], is_family["goal_noisy"], is_family["switching"]],
                         [rng.uniform(0.0, 0.3, n), rng.uniform(0.1, 0.6, n), rng.uniform(0.0, 0.3, n)], 0.0)
    reckless_drift = rng.random(n) < 0.5
    backwards = is_family["reckless"] & (rng.random(n) < 0.5)
    escaping = rng.random(n) < 0.5
    next_switch = rng.integers(*SWITCH_SEGMENT_STEPS, size=n)
    random_action = rng.uniform(-1, 1, size=(n, 2))
    env = diffdrive.DiffDriveEnv(n, seed=int(rng.integers(2**31)))
    readings = env.reset(starts)
    pose, velocity, ranges = [readings.pose], [readings.velocity], [readings.ranges]
    commands = []
    steps_before_contact = np.zeros(n, dtype=np.int64)
    collided = np.zeros(n, dtype=bool)
    returns = np.zeros(n)
    reached = diffdrive.goal_distance(readings.pose) <= diffdrive.GOAL_RADIUS
    scale = w.command_high
    for t in range(steps):
        p, r = readings.pose, readings.ranges
        if t % RANDOM_HOLD_STEPS == 0:
            redraw = rng.random(n) < 0.8
            random_action = np.where(redraw[:, None], rng.uniform(-1, 1, size=(n, 2)), random_action)
        switch = t >= next_switch
        escaping ^= switch
        next_switch = np.where(switch, t + rng.integers(*SWITCH_SEGMENT_STEPS, size=n), next_switch)
        goal, reckless = goal_command(p), reckless_command(r, backwards)
        drift = np.where(reckless_drift[:, None], reckless, goal)
        escape = _rows(is_family["switching"] & escaping, escape_command, r)
        switching = np.where(escaping[:, None], escape, drift)
        base = np.select([is_family[name][:, None] for name in names],
                         [_rows(is_family["obstacle_aware"], planner_command, p, r) / scale, goal / scale,
                          random_action, reckless / scale, switching / scale])
        command = np.clip(base + noise_sd[:, None] * rng.normal(size=(n, 2)), -1.0, 1.0) * scale
        active = env.active.copy()
        readings, reward, _, terminated, *_ = env.step(command)
        collided |= terminated
        returns += reward
        steps_before_contact += active
        reached |= active & (diffdrive.goal_distance(readings.pose) <= diffdrive.GOAL_RADIUS)
        commands.append(command)
        pose.append(readings.pose)
        velocity.append(readings.velocity)
        ranges.append(readings.ranges)
    stack = lambda xs: np.swapaxes(np.stack(xs), 0, 1)  # noqa: E731  [T, B, ...] -> [B, T, ...]
    return Episodes(pose=stack(pose), velocity=stack(velocity), ranges=stack(ranges), commands=stack(commands),
                    lengths=np.where(collided, np.minimum(steps_before_contact + CONTACT_STEPS, steps), steps),
                    family=family, collided=collided, goal_reached=reached, returns=returns)

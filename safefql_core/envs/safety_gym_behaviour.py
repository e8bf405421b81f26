"""Scripted behaviour mixes for Safety Gymnasium tasks (no RL), and the documented mixes.

DSRL's public datasets cannot be downloaded here, so offline data for the Safety
Gymnasium tasks is generated locally from scripted policies whose safety levels differ
clearly, so that both safe and costly behaviour is well covered (as for the boat).

Every policy reads only the flat observation the dataset stores (Point robot, layout from
safety_gymnasium/bases/base_task.py `obs()`): accelerometer [0:3], velocimeter [3:6],
gyro [6:9], magnetometer [9:12], then one 16-bin pseudo-lidar per observed object. A lidar
bin i covers the ego-frame angle [i, i+1) * 2pi/16 (0 = straight ahead, counter-clockwise
positive) and reads (max_dist - distance) / max_dist, with the two neighbour bins aliased,
so the bin-centre-weighted circular mean of the bins is the object's bearing and the
largest bin gives its distance. Actions are [forward force, turn rate] in [-1, 1]; the
policies servo the forward speed (velocimeter [3]) to a target in m/s.

SafetyPointCircle1-v0 (lidar [12:28] on the circle's centre, max_dist 6; reward for
counter-clockwise speed near radius 1.5; cost 1 while |x| > 1.125, outside the walls):

| family  | share | what it does                                                              |
|---------|-------|---------------------------------------------------------------------------|
| inner   | 35 %  | orbits counter-clockwise at radius ~ U[0.4, 0.9], 0.4-1 m/s, noise sd <= 0.15: safe |
| reward  | 25 %  | orbits at the rewarded radius ~ U[1.3, 1.7]: crosses the walls every lap   |
| switching | 20 % | alternates a reward orbit and an inner orbit, each held ~60 steps (geometric) |
| noisy   | 10 %  | orbits at radius ~ U[0.4, 1.7] with action noise sd ~ U[0.3, 0.8]          |
| random  | 10 %  | a random action, redrawn every 25 steps (temporally correlated)            |

SafetyPointGoal1-v0 (goal lidar [12:28], hazards lidar [28:44], vases lidar [44:60], all
max_dist 3; reward for progress to the goal, which moves when reached; cost 1 inside one
of 8 hazards of radius 0.2):

| family  | share | what it does                                                              |
|---------|-------|---------------------------------------------------------------------------|
| avoid   | 35 %  | 0.2-0.5 m/s to the goal via the free lidar direction closest to it    |
|         |       | (hazards within 0.6 block +-2 bins; backs off within 0.35);           |
|         |       | noise sd ~ U[0, 0.3]: safe, slow                                          |
| seek    | 25 %  | 0.4-1 m/s straight to the goal, ignores hazards; noise sd ~ U[0, 0.5]      |
| switching | 20 % | alternates seek and avoid at 0.4-1 m/s, each held ~40 steps (geometric)  |
| random  | 10 %  | a random action, redrawn every 25 steps                                    |
| reckless| 10 %  | drives to the nearest hazard and stops in it (fills the unsafe set)        |

When the goal is out of lidar range (all bins 0) the goal-directed policies drive a wide
left arc to find it. The switching families exist for the safety critic: it learns
feasibility from logged actions only, and without them no logged action turns inwards from a
wall-crossing orbit or avoids a hazard at seeking speed (docs/DESIGN.md). The cost rate
per step of every family in the standard datasets is in docs/notebook/safety-gymnasium-data.md.

Each episode runs one family with parameters drawn once per episode, from a reset seeded
by the collection seed, so a dataset is a pure function of the seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from safefql_core.envs.safety_gym import SafetyGymEnv, make_env

LIDAR_BINS = 16
VELOCITY_FORWARD = 3       # velocimeter x: ego forward speed
RANDOM_HOLD_STEPS = 25
CIRCLE_LIDAR = slice(12, 28)
GOAL_LIDAR, HAZARD_LIDAR = slice(12, 28), slice(28, 44)
HAZARD_CLEARANCE = 0.6     # hazard radius 0.2 + robot + sliding distance
HAZARD_ESCAPE = 0.35
_BIN_CENTRES = (np.arange(LIDAR_BINS) + 0.5) * 2 * np.pi / LIDAR_BINS


def lidar_target(bins: np.ndarray, max_dist: float) -> tuple[float, float] | None:
    """(ego bearing, distance) of the object a pseudo-lidar sees; None when it sees nothing."""
    if bins.max() <= 0:
        return None
    z = np.sum(bins * np.exp(1j * _BIN_CENTRES))
    return float(np.angle(z)), float(max_dist * (1.0 - bins.max()))


def steer(obs: np.ndarray, bearing: float, speed: float) -> np.ndarray:
    """Point-robot action: turn towards an ego bearing, track `speed` (m/s) when facing it.

    The forward command is a velocity servo on the velocimeter's forward reading: the
    robot barely damps itself, so an open-loop force would keep accelerating it.
    """
    forward = np.clip(3.0 * (speed * max(np.cos(bearing), 0.0) - obs[VELOCITY_FORWARD]), -1.0, 1.0)
    return np.array([forward, np.clip(2.0 * bearing, -1.0, 1.0)])


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


def orbit(obs: np.ndarray, radius: float, speed: float) -> np.ndarray:
    """Counter-clockwise orbit of the circle's centre: tangent heading plus a radial correction."""
    centre = lidar_target(obs[CIRCLE_LIDAR], max_dist=6.0)
    if centre is None:
        return steer(obs, 0.0, speed)
    bearing, dist = centre
    correction = np.clip(2.0 * (dist - radius), -1.0, 1.0)   # > 0: too far out, turn inwards
    return steer(obs, _wrap(bearing - np.pi / 2 + correction), speed)


def goal_seek(obs: np.ndarray, speed: float, avoid: bool) -> np.ndarray:
    """Head for the goal; with `avoid`, take the free lidar direction closest to it instead.

    A direction is blocked when a hazard centre lies within HAZARD_CLEARANCE in its bin or
    the two bins either side, and a hazard closer than HAZARD_ESCAPE is driven away from;
    with the slow-down this keeps the robot out of nearly all 0.2-radius hazards (it slides
    sideways, and goals may lie close to a hazard).
    """
    goal = lidar_target(obs[GOAL_LIDAR], max_dist=3.0)
    bearing = goal[0] if goal is not None else 0.5
    if avoid:
        hazards = obs[HAZARD_LIDAR]
        near = hazards > 1.0 - HAZARD_CLEARANCE / 3.0
        blocked = near | np.roll(near, 1) | np.roll(near, -1) | np.roll(near, 2) | np.roll(near, -2)
        if hazards.max() > 1.0 - HAZARD_ESCAPE / 3.0:
            bearing, speed = _wrap(_BIN_CENTRES[np.argmax(hazards)] + np.pi), 0.3 * speed
        elif blocked.any() and not blocked.all():
            offsets = np.abs([_wrap(c - bearing) for c in _BIN_CENTRES])
            bearing = _wrap(_BIN_CENTRES[np.argmin(np.where(blocked, np.inf, offsets))])
            speed *= 0.3      # the Point robot slides: slow down while skirting a hazard
    return steer(obs, bearing, speed)


def nearest_hazard(obs: np.ndarray) -> np.ndarray:
    """Drive at the nearest hazard, slowing to a stop at its centre so the robot lingers in it."""
    hazards = obs[HAZARD_LIDAR]
    if hazards.max() <= 0:
        return np.array([1.0, 0.5])
    distance = 3.0 * (1.0 - hazards.max())
    return steer(obs, _wrap(_BIN_CENTRES[np.argmax(hazards)]), min(distance, 1.0))


Policy = Callable[[np.ndarray], np.ndarray]
Draw = Callable[[np.random.Generator], tuple[Policy | None, float]]
"""rng -> (policy for one episode, or None for random actions; action-noise sd)."""


@dataclass(frozen=True)
class Family:
    """A behaviour family: its share of episodes and how one episode's policy is drawn."""

    share: float
    draw: Draw


def _orbit(radius: tuple[float, float], noise: tuple[float, float]) -> Draw:
    def draw(rng: np.random.Generator) -> tuple[Policy, float]:
        r, speed = rng.uniform(*radius), rng.uniform(0.4, 1.0)
        return (lambda obs: orbit(obs, r, speed)), rng.uniform(*noise)
    return draw


def _goal(avoid: bool, speed: tuple[float, float], noise: tuple[float, float]) -> Draw:
    def draw(rng: np.random.Generator) -> tuple[Policy, float]:
        speed_ = rng.uniform(*speed)
        return (lambda obs: goal_seek(obs, speed_, avoid)), rng.uniform(*noise)
    return draw


def _switching(first: Draw, second: Draw, mean_hold: float) -> Draw:
    """Alternate two families' policies within an episode, each held ~Geometric(1/mean_hold) steps.

    The switches put one family's actions into the other's states: turning inwards from a
    wall-crossing orbit, or avoiding a hazard from a fast direct approach. Those are the
    escapes the safety critic needs to see logged to call such states feasible.
    """
    def draw(rng: np.random.Generator) -> tuple[Policy, float]:
        (a, noise_a), (b, _) = first(rng), second(rng)
        switches = np.random.default_rng(int(rng.integers(2**31)))
        state: dict[str, Any] = {"policy": a, "left": switches.geometric(1.0 / mean_hold)}

        def policy(obs: np.ndarray) -> np.ndarray:
            if state["left"] <= 0:
                state["policy"] = b if state["policy"] is a else a
                state["left"] = switches.geometric(1.0 / mean_hold)
            state["left"] -= 1
            return state["policy"](obs)
        return policy, noise_a
    return draw


def random_actions(rng: np.random.Generator) -> tuple[None, float]:
    """The random family: no policy, so `collect` draws an action every RANDOM_HOLD_STEPS steps."""
    return None, 0.0


MIXES: dict[str, dict[str, Family]] = {
    "SafetyPointCircle1-v0": {
        "inner": Family(0.35, _orbit(radius=(0.4, 0.9), noise=(0.0, 0.15))),
        "reward": Family(0.25, _orbit(radius=(1.3, 1.7), noise=(0.0, 0.15))),
        "switching": Family(0.20, _switching(_orbit(radius=(1.3, 1.7), noise=(0.0, 0.15)),
                                             _orbit(radius=(0.4, 0.9), noise=(0.0, 0.15)), mean_hold=60)),
        "noisy": Family(0.10, _orbit(radius=(0.4, 1.7), noise=(0.3, 0.8))),
        "random": Family(0.10, random_actions),
    },
    "SafetyPointGoal1-v0": {
        "avoid": Family(0.35, _goal(avoid=True, speed=(0.2, 0.5), noise=(0.0, 0.3))),
        "seek": Family(0.25, _goal(avoid=False, speed=(0.4, 1.0), noise=(0.0, 0.5))),
        "switching": Family(0.20, _switching(_goal(avoid=False, speed=(0.4, 1.0), noise=(0.0, 0.3)),
                                             _goal(avoid=True, speed=(0.4, 1.0), noise=(0.0, 0.3)), mean_hold=40)),
        "random": Family(0.10, random_actions),
        "reckless": Family(0.10, lambda rng: (nearest_hazard, 0.1)),
    },
}
TASKS = tuple(MIXES)


def shares(families: dict[str, Family]) -> dict[str, float]:
    """Each family's share of the episodes (stored in the dataset's attrs as `behaviour_mix`)."""
    return {name: fam.share for name, fam in families.items()}


def _families(task_id: str) -> dict[str, Family]:
    if task_id not in MIXES:
        raise ValueError(f"no behaviour mix for {task_id!r}; scripted mixes exist for {list(TASKS)}")
    return MIXES[task_id]


def collect(task_id: str, num_episodes: int, seed: int, max_episode_steps: int | None = None,
            progress: bool = True, families: dict[str, Family] | None = None,
            action_repeat: int = 1) -> dict[str, np.ndarray]:
    """Roll out a behaviour mix (default: the task's scripted one); return flat DSRL-layout
    arrays plus `family` ids, and `margins` (signed distance to the failure set) where the
    task has a geometric margin.

    Episodes are contiguous; each ends with timeouts=1 at the time limit or terminals=1
    when the task terminates it (the velocity tasks' cheetah can flip but never
    terminates). Actions are stored after clipping to [-1, 1].

    With `action_repeat` k > 1 the behaviour decides every k steps and holds its action in
    between; a transition is one decision: reward and cost summed over its k steps, the
    margin their largest (SafetyGymEnv.hold).
    """
    if action_repeat < 1:
        raise ValueError(f"action_repeat must be at least 1, got {action_repeat}")
    families = families or _families(task_id)
    names = list(families)
    rng = np.random.default_rng(seed)
    family = rng.choice(len(names), size=num_episodes, p=[f.share for f in families.values()])
    env: SafetyGymEnv = make_env(task_id, seed, max_episode_steps)
    keys = ("observations", "actions", "rewards", "costs", "terminals", "timeouts", "next_observations")
    out: dict[str, list] = {k: [] for k in keys}
    out["family"] = []
    if env.has_geometric_margin:
        out["margins"] = []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=num_episodes * env.max_episode_steps if env.max_episode_steps else None,
                   desc=f"collect {task_id}", unit="step")
    for ep in range(num_episodes):
        policy, noise_sd = families[names[family[ep]]].draw(rng)
        obs = env.reset(seed=int(rng.integers(2**31)))
        random_action = rng.uniform(-1.0, 1.0, env.act_dim)
        done, t = False, 0
        while not done:
            if policy is None:
                if t % RANDOM_HOLD_STEPS < action_repeat:  # a hold boundary in this decision's steps
                    random_action = rng.uniform(-1.0, 1.0, env.act_dim)
                base = random_action
            else:
                base = policy(obs)
            action = np.clip(base + noise_sd * rng.normal(size=env.act_dim), -1.0, 1.0)
            next_obs, reward, cost, terminated, truncated, info, ticks = env.hold(action, action_repeat)
            done = terminated or truncated
            for k, v in zip(keys, (obs, action, reward, cost, terminated, truncated and not terminated, next_obs)):
                out[k].append(v)
            out["family"].append(family[ep])
            if "margins" in out:
                out["margins"].append(info["margin"])
            obs, t = next_obs, t + ticks
            if bar is not None:
                bar.update(ticks)
    if bar is not None:
        bar.close()
    env.close()
    flat = {k: np.asarray(v, dtype=np.float32) for k, v in out.items() if k != "family"}
    flat["family"] = np.asarray(out["family"], dtype=np.int8)
    return flat

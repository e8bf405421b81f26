"""Scripted behaviour policies for the boat dataset, and the documented mix.

The paper's 1M-transition boat dataset is not public, so we generate our own from four
behaviour families chosen so that both safe and unsafe behaviour is well covered:

| family         | share | what it does                                                        |
|----------------|-------|---------------------------------------------------------------------|
| obstacle_aware | 40 %  | short-horizon lookahead: best of 16 headings held 0.3 s, avoiding discs; noise sd ~ U[0, 0.3] |
| goal_noisy     | 30 %  | heads straight at the goal, ignores obstacles; noise sd ~ U[0.1, 0.6] |
| random         | 15 %  | a random heading, redrawn every ~0.25 s (temporally correlated)     |
| reckless       | 15 %  | heads at the nearest obstacle centre (fills the unsafe set)         |

Each episode runs one family from a uniformly drawn safe initial state for 400 steps.
All policies are vectorised over a batch of boats; the per-episode parameters (noise
levels) are drawn once per episode so the data contains a spread of skill levels.
"""
from __future__ import annotations

import numpy as np

from safefql_core.envs import boat

MIX = {"obstacle_aware": 0.40, "goal_noisy": 0.30, "random": 0.15, "reckless": 0.15}
LOOKAHEAD_STEPS = 60      # 0.3 s: enough to see a disc at the current's top speed (~3 units/s)
LOOKAHEAD_HEADINGS = 16
REPLAN_EVERY = 5
RANDOM_HOLD_STEPS = 50


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def goal_heading(states: np.ndarray) -> np.ndarray:
    return _unit(boat.GOAL - states)


def lookahead_heading(states: np.ndarray, clearance: float = 0.05) -> np.ndarray:
    """Best constant heading over a short rollout of the true dynamics.

    Score: final distance to the goal, plus a large penalty for any predicted step
    closer than `clearance` to a disc. A cheap model-predictive controller: safe in most
    states, but short-sighted, so it still loses some boats to the current.
    """
    angles = np.linspace(0, 2 * np.pi, LOOKAHEAD_HEADINGS, endpoint=False)
    cand = np.stack([np.cos(angles), np.sin(angles)], axis=-1)          # [K, 2]
    s = np.repeat(states[:, None, :], LOOKAHEAD_HEADINGS, axis=1)      # [B, K, 2]
    worst = np.full(s.shape[:2], -np.inf)
    for _ in range(LOOKAHEAD_STEPS):
        s = boat.dynamics(s, cand[None])
        worst = np.maximum(worst, boat.margin(s))
    score = np.linalg.norm(s - boat.GOAL, axis=-1) + 100.0 * (worst > -clearance) + 10.0 * np.maximum(worst + clearance, 0)
    return cand[np.argmin(score, axis=1)]


def reckless_heading(states: np.ndarray) -> np.ndarray:
    d = np.linalg.norm(states[:, None, :] - boat.OBSTACLE_CENTRES, axis=-1)
    return _unit(boat.OBSTACLE_CENTRES[np.argmin(d, axis=1)] - states)


def collect(num_episodes: int, seed: int, progress: bool = True) -> dict[str, np.ndarray]:
    """Roll out the behaviour mix; return flat DSRL-layout arrays (+ margins, family ids)."""
    rng = np.random.default_rng(seed)
    families = list(MIX)
    family = rng.choice(len(families), size=num_episodes, p=list(MIX.values()))
    noise_sd = np.where(family == families.index("obstacle_aware"), rng.uniform(0.0, 0.3, num_episodes),
                        np.where(family == families.index("goal_noisy"), rng.uniform(0.1, 0.6, num_episodes), 0.0))
    env = boat.BoatEnv(num_episodes, seed=int(rng.integers(2**31)))
    obs = env.reset()
    random_dir = _unit(rng.normal(size=(num_episodes, 2)))
    planned = lookahead_heading(obs)
    keys = ("observations", "actions", "rewards", "costs", "margins", "next_observations")
    out = {k: [] for k in keys}
    steps = range(boat.EPISODE_STEPS)
    if progress:
        from tqdm import tqdm
        steps = tqdm(steps, desc=f"collect {num_episodes} episodes", unit="step")
    for t in steps:
        if t % REPLAN_EVERY == 0:
            planned = lookahead_heading(obs)
        if t % RANDOM_HOLD_STEPS == 0:
            redraw = rng.random(num_episodes) < 0.8
            random_dir = np.where(redraw[:, None], _unit(rng.normal(size=(num_episodes, 2))), random_dir)
        base = np.select(
            [family[:, None] == families.index(f) for f in families],
            [planned, goal_heading(obs), random_dir, reckless_heading(obs)],
        )
        action = np.clip(base + noise_sd[:, None] * rng.normal(size=base.shape), -1.0, 1.0)
        next_obs, rew, cost, _, _, info = env.step(action)
        for k, v in zip(keys, (obs, action, rew, cost, info["margin"], next_obs)):
            out[k].append(v)
        obs = next_obs
    # [T, B, ...] -> episode-major [B * T, ...] so each episode is contiguous
    flat = {}
    for k, v in out.items():
        arr = np.swapaxes(np.stack(v), 0, 1)
        flat[k] = arr.reshape(num_episodes * boat.EPISODE_STEPS, *arr.shape[2:]).astype(np.float32)
    timeouts = np.zeros((num_episodes, boat.EPISODE_STEPS), dtype=np.float32)
    timeouts[:, -1] = 1.0
    flat["timeouts"] = timeouts.reshape(-1)
    flat["terminals"] = np.zeros_like(flat["timeouts"])
    flat["family"] = np.repeat(family, boat.EPISODE_STEPS).astype(np.int8)
    return flat

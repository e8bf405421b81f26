"""Scripted behaviour policies for the boat dataset, and the documented mix.

The paper's 1M-transition boat dataset is not public, so we generate our own from five
behaviour families chosen so that both safe and unsafe behaviour is well covered:

| family         | share | what it does                                                        |
|----------------|-------|---------------------------------------------------------------------|
| obstacle_aware | 35 %  | short-horizon lookahead: best of 16 headings held 0.3 s, avoiding   |
|                |       | discs; noise sd ~ U[0, 0.3]                                         |
| goal_noisy     | 25 %  | heads straight at the goal, ignores obstacles; noise sd ~ U[0.1, 0.6] |
| random         | 12.5 %| a random heading, redrawn every ~0.25 s (temporally correlated)     |
| reckless       | 12.5 %| heads at the nearest obstacle centre (fills the unsafe set)         |
| switching      | 15 %  | alternates goal-seeking (or reckless) drift with a long-horizon     |
|                |       | escape, segments ~ 0.1-0.5 s                                        |

Each episode runs one family from a uniformly drawn safe initial state for 400 steps.
All policies are vectorised over a batch of boats; the per-episode parameters (noise
levels) are drawn once per episode so the data contains a spread of skill levels.

Why `switching`: the safety value V_c is an expectile over *logged* actions, so a state is
only learned to be recoverable if the data shows a recovery from it. Upstream of a disc,
where the current carries the boat onto it, the other families log almost only drift into
the disc (goal-seeking or reckless); the escape (steering across the current early) was
nearly absent. Switching from a drift into an escape at random moments logs escapes from
every distance to a disc, including too-late ones, so both sides of the boundary are in the
data. With the (optimistic) safety_expectile 0.9 that follows the best logged
continuation, it halves the remaining violating steps, for ~12 of return (docs/DESIGN.md,
"The boat's behaviour data and `safety_expectile`").
"""
from __future__ import annotations

import numpy as np

from safefql_core.envs import boat

MIX = {"obstacle_aware": 0.35, "goal_noisy": 0.25, "random": 0.125, "reckless": 0.125, "switching": 0.15}
LOOKAHEAD_STEPS = 60      # 0.3 s: enough to see a disc at the current's top speed (~3 units/s)
LOOKAHEAD_HEADINGS = 16
REPLAN_EVERY = 5
RANDOM_HOLD_STEPS = 50
# The escape looks further ahead than the goal-seeking lookahead: upstream of a disc the boat
# must start steering across the current ~80 steps before it would reach the disc.
ESCAPE_STEPS = 120
ESCAPE_HEADINGS = 32
SWITCH_SEGMENT_STEPS = (20, 100)   # drift / escape segment lengths, uniform


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def goal_heading(states: np.ndarray) -> np.ndarray:
    return _unit(boat.GOAL - states)


def constant_heading_rollouts(states: np.ndarray, headings: int,
                              steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every state rolled out under each of `headings` evenly spaced constant headings for
    `steps` steps of the true dynamics: (headings [K, 2], final states [B, K, 2], largest
    margin on the way [B, K])."""
    angles = np.linspace(0, 2 * np.pi, headings, endpoint=False)
    cand = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    s = np.repeat(states[:, None, :], headings, axis=1)
    worst = np.full(s.shape[:2], -np.inf)
    for _ in range(steps):
        s = boat.dynamics(s, cand[None])
        worst = np.maximum(worst, boat.margin(s))
    return cand, s, worst


def lookahead_heading(states: np.ndarray, clearance: float = 0.05) -> np.ndarray:
    """Best constant heading over a short rollout of the true dynamics.

    Score: final distance to the goal, plus a large penalty for any predicted step
    closer than `clearance` to a disc. A cheap model-predictive controller: safe in most
    states, but short-sighted, so it still loses some boats to the current.
    """
    cand, s, worst = constant_heading_rollouts(states, LOOKAHEAD_HEADINGS, LOOKAHEAD_STEPS)
    score = (np.linalg.norm(s - boat.GOAL, axis=-1) + 100.0 * (worst > -clearance)
             + 10.0 * np.maximum(worst + clearance, 0))
    return cand[np.argmin(score, axis=1)]


def escape_heading(states: np.ndarray) -> np.ndarray:
    """The constant heading that keeps the largest clearance from the discs over ESCAPE_STEPS.

    Pure safety, no goal term: it is the recovery half of the `switching` family.
    """
    cand, _, worst = constant_heading_rollouts(states, ESCAPE_HEADINGS, ESCAPE_STEPS)
    return cand[np.argmin(worst, axis=1)]


def reckless_heading(states: np.ndarray) -> np.ndarray:
    d = np.linalg.norm(states[:, None, :] - boat.OBSTACLE_CENTRES, axis=-1)
    return _unit(boat.OBSTACLE_CENTRES[np.argmin(d, axis=1)] - states)


def collect(num_episodes: int, seed: int, progress: bool = True) -> dict[str, np.ndarray]:
    """Roll out the behaviour mix; return flat DSRL-layout arrays (+ margins, family ids)."""
    rng = np.random.default_rng(seed)
    families = list(MIX)
    family = rng.choice(len(families), size=num_episodes, p=list(MIX.values()))
    noise_sd = np.select(
        [family == families.index(f) for f in ("obstacle_aware", "goal_noisy", "switching")],
        [rng.uniform(0.0, 0.3, num_episodes), rng.uniform(0.1, 0.6, num_episodes), rng.uniform(0.0, 0.3, num_episodes)],
        0.0)
    switcher = SwitchingSchedule(family == families.index("switching"), rng)
    env = boat.BoatEnv(num_episodes, seed=int(rng.integers(2**31)))
    obs = env.reset()
    random_dir = _unit(rng.normal(size=(num_episodes, 2)))
    planned = lookahead_heading(obs)
    escape = switcher.escape_headings(obs)
    keys = ("observations", "actions", "rewards", "costs", "margins", "next_observations")
    out: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    steps = range(boat.EPISODE_STEPS)
    if progress:
        from tqdm import tqdm
        steps = tqdm(steps, desc=f"collect {num_episodes} episodes", unit="step")
    for t in steps:
        if t % REPLAN_EVERY == 0:
            planned = lookahead_heading(obs)
            escape = switcher.escape_headings(obs)
        if t % RANDOM_HOLD_STEPS == 0:
            redraw = rng.random(num_episodes) < 0.8
            random_dir = np.where(redraw[:, None], _unit(rng.normal(size=(num_episodes, 2))), random_dir)
        goal, reckless = goal_heading(obs), reckless_heading(obs)
        base = np.select(
            [family[:, None] == families.index(f) for f in families],
            [planned, goal, random_dir, reckless, switcher.heading(t, goal, reckless, escape)],
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


class SwitchingSchedule:
    """Per-episode drift / escape segments of the `switching` family.

    Each switching episode drifts towards the goal (or, for half of them, the nearest disc)
    and escapes with `escape_heading` in alternating segments of SWITCH_SEGMENT_STEPS; it
    starts in either phase. The escape lookahead is only computed for these episodes.
    """

    def __init__(self, active: np.ndarray, rng: np.random.Generator):
        n = len(active)
        self.active = active
        self.rng = rng
        self.reckless_drift = rng.random(n) < 0.5
        self.escaping = rng.random(n) < 0.5
        self.next_switch = rng.integers(*SWITCH_SEGMENT_STEPS, size=n)

    def escape_headings(self, states: np.ndarray) -> np.ndarray:
        headings = np.zeros_like(states)
        if self.active.any():
            headings[self.active] = escape_heading(states[self.active])
        return headings

    def heading(self, t: int, goal: np.ndarray, reckless: np.ndarray, escape: np.ndarray) -> np.ndarray:
        """The family's heading at step t (advancing the schedule); zeros outside the family."""
        switch = t >= self.next_switch
        self.escaping ^= switch
        self.next_switch = np.where(switch, t + self.rng.integers(*SWITCH_SEGMENT_STEPS, size=len(switch)),
                                    self.next_switch)
        drift = np.where(self.reckless_drift[:, None], reckless, goal)
        return np.where((self.active & self.escaping)[:, None], escape, np.where(self.active[:, None], drift, 0.0))

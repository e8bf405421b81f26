"""Behaviour for Safety Gymnasium velocity tasks: online-trained policies of varying speed.

A scripted gait for a MuJoCo cheetah is not practical, so (as DSRL did) the behaviour is a
set of online-trained policies. Two SAC runs (stable-baselines3, an optional dependency:
`pip install stable-baselines3==2.3.2`, the last release that accepts gymnasium 0.28.1) are
trained, and snapshots taken along the way are the policies:
- `sac` trains on the task's *reward only*: early snapshots run slowly, late ones faster than
  the velocity limit;
- `paced` trains on the reward minus PACE_PENALTY per m/s above PACE (2.4 m/s): a fixed-
  penalty stand-in for DSRL's policies trained under cost limits, it runs fast but (mostly)
  below the limit.
That gives one dataset every speed from standing still to well past the limit, i.e. both
safe and costly behaviour, without training a policy per speed. Snapshots are saved as SB3
zips under a policy directory and reused by later collections (training is the slow part:
~80 steps/s on one CPU core, ~20 min per run).

SafetyHalfCheetahVelocity-v1 (17-d observation, 6 joint torques in [-1, 1], 1000-step
episodes; cost 1 while the forward speed exceeds 3.2096 m/s). Each episode runs one
family with Gaussian action noise of sd ~ U[0, 0.3] drawn per episode:

| family     | share | policy                                                          |
|------------|-------|-----------------------------------------------------------------|
| sac-k/5    | 9 % each (k = 1..5) | the `sac` snapshot after k/5 of its steps: sac-1/5 slow, sac-5/5 fastest |
| paced-k/5  | 10 % each (k = 3..5) | the `paced` snapshot after k/5 of its steps                  |
| capped-k/5 | 5 % each (k = 3..5) | `sac` snapshot k/5 below a per-episode speed cap ~ U[1.0, 1.8] m/s, zero torque (coasting) above it |
| random     | 10 %  | a random action, redrawn every 25 steps                          |

Why the paced run: with the reward-only snapshots and the governor alone, no logged episode
runs steadily anywhere between the governor's ~1.2–1.4 m/s and the limit, so the best safe
behaviour in the data was the governor's, and an offline method had nothing better than
BC-Safe to find (docs/notebook/safety-gymnasium-sessions-9-10.md, session 9). Why the
capped families: in a fast state
every snapshot's action keeps running fast, so the data would hold no action that slows
down from there. The safety critic learns feasibility from logged escapes only (V_c is an
expectile over logged actions), so without them it calls every fast state infeasible. A
speed governor over the same snapshots adds the braking actions (coasting). The speed is
the observation's root x-velocity (index 8) for the governor, and the task's own
`x_velocity` (the one its cost uses) for the pace penalty. Measured speeds and cost rates
are in docs/notebook/safety-gymnasium-sessions-9-10.md (session 9).
"""
from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from safefql_core.envs.safety_gym import SafetyGymEnv, make_env, silence_adroit_notice
from safefql_core.envs.safety_gym_behaviour import Draw, Family, Policy, random_actions

TASKS = ("SafetyHalfCheetahVelocity-v1",)
SNAPSHOTS = 5
SNAPSHOT_SHARE = 0.09
PACED = (3, 4, 5)             # paced snapshots in the mix (earlier ones run like early sac ones)
PACED_SHARE = 0.10
CAPPED = (3, 4, 5)            # sac snapshots that also run under a speed cap
CAPPED_SHARE = 0.05
RANDOM_SHARE = 0.10
PACE = 2.4                    # m/s: the paced run's speed, far enough below 3.2096 for a gait's surges
PACE_PENALTY = 4.0            # reward lost per m/s above PACE: net slope -3 above it
RUNS = {"sac": None, "paced": PACE}   # SAC run -> its pace (None: the task's reward only)
SPEED_CAP = (1.0, 1.8)        # m/s: a coasting cheetah still surges ~1.5 m/s past the cap (3.2096 limit)
FORWARD_SPEED = 8             # observation index of the root's x-velocity
NOISE_SD = (0.0, 0.3)
DEFAULT_TIMESTEPS = 100_000
LEARNING_STARTS = 5_000
SB3_HINT = ("velocity tasks train their behaviour policies with stable-baselines3; install it with "
            "`pip install -c constraints.txt stable-baselines3==2.3.2` (the last release that accepts "
            "gymnasium 0.28.1)")


def _sb3() -> Any:
    if importlib.util.find_spec("stable_baselines3") is None:
        raise ImportError(SB3_HINT)
    silence_adroit_notice()  # stable-baselines3 imports gymnasium
    import stable_baselines3
    return stable_baselines3


def gymnasium_env(task_id: str, seed: int, max_episode_steps: int | None = None,
                  pace: float | None = None) -> Any:
    """The adapter behind the gymnasium 5-tuple API that SB3 trains on (cost in info["cost"]).

    With `pace`, the reward loses PACE_PENALTY per m/s of `x_velocity` above it.
    """
    silence_adroit_notice()
    import gymnasium

    class Env(gymnasium.Env):
        def __init__(self) -> None:
            self.inner: SafetyGymEnv = make_env(task_id, seed, max_episode_steps)
            self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (self.inner.obs_dim,), np.float32)
            self.action_space = gymnasium.spaces.Box(self.inner.action_low, self.inner.action_high)

        def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
            return self.inner.reset(seed=seed), {}

        def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
            obs, reward, cost, terminated, truncated, info = self.inner.step(action)
            if pace is not None:
                reward -= PACE_PENALTY * max(0.0, info["x_velocity"] - pace)
            return obs, reward, terminated, truncated, {**info, "cost": cost}

        def close(self) -> None:
            self.inner.close()

    return Env()


def snapshot_paths(policy_dir: str | Path, run: str = "sac") -> list[Path]:
    return [Path(policy_dir) / f"{run}-{k}of{SNAPSHOTS}.zip" for k in range(1, SNAPSHOTS + 1)]


def train_policies(task_id: str, policy_dir: str | Path, seed: int, timesteps: int = DEFAULT_TIMESTEPS,
                   progress: bool = True) -> dict[str, list[Path]]:
    """Train every SAC run of RUNS and save SNAPSHOTS evenly spaced snapshots of each.

    Reuses a run's snapshots when `policy_dir` already holds it with the same task, seed,
    timesteps and pace (its `<run>.json`); refuses to mix with a run of other settings.
    Those checks run here, so a reuse starts no process and a refusal comes before any
    training. Runs still to train go side by side, one process and one thread each, when
    the machine has the cores: each is single-threaded and seeded, so the snapshots do not
    depend on that.
    """
    _check_task(task_id)
    settings = {run: _settings(task_id, run, seed, timesteps) for run in RUNS}
    pending = [run for run in RUNS if not _is_trained(policy_dir, run, settings[run])]
    if pending and timesteps < SNAPSHOTS:
        raise ValueError(f"--rl-timesteps must be at least {SNAPSHOTS}, got {timesteps}")
    jobs = [(task_id, policy_dir, run, settings[run], progress, position) for position, run in enumerate(pending)]
    if len(jobs) < 2 or (os.cpu_count() or 1) < 2:
        for job in jobs:
            _train_run(*job)
    else:
        with ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
            for future in [pool.submit(_train_run, *job) for job in jobs]:
                future.result()
    return {run: snapshot_paths(policy_dir, run) for run in RUNS}


def _settings(task_id: str, run: str, seed: int, timesteps: int) -> dict[str, Any]:
    """What a run's snapshots are trained with, as stored in `<run>.json`.

    Asks for stable-baselines3 (its version is part of the settings), so a missing install
    fails here, in the calling process, before anything starts.
    """
    settings = {"task": task_id, "seed": seed, "timesteps": timesteps, "algorithm": "SAC",
                "stable_baselines3": _sb3().__version__}
    if RUNS[run] is not None:
        settings.update(pace=RUNS[run], pace_penalty=PACE_PENALTY)
    return settings


def _is_trained(policy_dir: str | Path, run: str, settings: dict[str, Any]) -> bool:
    """True when `policy_dir` holds all of `run`'s snapshots; refuses a run of other settings."""
    meta_path = Path(policy_dir) / f"{run}.json"
    if not meta_path.is_file():
        return False
    stored = json.loads(meta_path.read_text())
    if stored != settings:
        raise ValueError(f"{policy_dir} holds behaviour policies trained with {stored}, not {settings}; "
                         "pass another --policies directory or delete that one")
    return all(p.is_file() for p in snapshot_paths(policy_dir, run))


def _train_run(task_id: str, policy_dir: str | Path, run: str, settings: dict[str, Any], progress: bool,
               position: int = 0) -> None:
    paths, meta_path = snapshot_paths(policy_dir, run), Path(policy_dir) / f"{run}.json"
    seed, timesteps = settings["seed"], settings["timesteps"]
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    Path(policy_dir).mkdir(parents=True, exist_ok=True)
    every = timesteps // SNAPSHOTS

    class Snapshots(BaseCallback):
        """Save a snapshot every `every` steps; drive the progress bar."""

        def __init__(self) -> None:
            super().__init__()
            self.bar = None

        def _on_training_start(self) -> None:
            if progress:
                from tqdm import tqdm
                self.bar = tqdm(total=timesteps, desc=f"SAC behaviour policies {task_id} ({run})", unit="step",
                                position=position)

        def _on_step(self) -> bool:
            if self.bar is not None:
                self.bar.update()
            if self.num_timesteps % every == 0:   # learn() runs exactly every * SNAPSHOTS steps
                self.model.save(paths[self.num_timesteps // every - 1])
            return True

        def _on_training_end(self) -> None:
            if self.bar is not None:
                self.bar.close()

    torch.set_num_threads(1)   # small nets gain nothing from threads, and one thread is reproducible
    torch.manual_seed(seed)
    model = _sb3().SAC("MlpPolicy", gymnasium_env(task_id, seed, pace=RUNS[run]), seed=seed, device="cpu", verbose=0,
                       learning_starts=min(LEARNING_STARTS, timesteps // 2))
    model.learn(total_timesteps=every * SNAPSHOTS, callback=Snapshots())
    model.env.close()
    meta_path.write_text(json.dumps(settings, indent=1) + "\n")


def families(task_id: str, policy_dir: str | Path) -> dict[str, Family]:
    """The task's behaviour families from the snapshots in `policy_dir` (see the module table)."""
    _check_task(task_id)
    missing = [str(p) for run in RUNS for p in snapshot_paths(policy_dir, run) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"behaviour policies missing: {missing}; train them with "
                                f"`python -m offline_train.collect --task {task_id} --policies {policy_dir}`")
    sac = _sb3().SAC
    models = {run: [sac.load(path, device="cpu") for path in snapshot_paths(policy_dir, run)] for run in RUNS}
    out = {f"sac-{k}/{SNAPSHOTS}": Family(SNAPSHOT_SHARE, _snapshot(m)) for k, m in enumerate(models["sac"], start=1)}
    for k in PACED:
        out[f"paced-{k}/{SNAPSHOTS}"] = Family(PACED_SHARE, _snapshot(models["paced"][k - 1]))
    for k in CAPPED:
        out[f"capped-{k}/{SNAPSHOTS}"] = Family(CAPPED_SHARE, _capped(models["sac"][k - 1]))
    out["random"] = Family(RANDOM_SHARE, random_actions)
    return out


def _act(model: Any) -> Policy:
    return lambda obs: model.predict(obs, deterministic=True)[0]


def _snapshot(model: Any) -> Draw:
    def draw(rng: np.random.Generator) -> tuple[Policy, float]:
        return _act(model), rng.uniform(*NOISE_SD)
    return draw


def _capped(fast: Any) -> Draw:
    """`fast` below a per-episode speed cap, zero torque above it: a bang-bang speed governor.

    Coasting, not the slow snapshot, is the brake: sac-1/5 accelerates from states it never
    saw (one seed-1 episode under a 1.5 m/s cap: 118 costly steps with it, 2 coasting).
    """
    def draw(rng: np.random.Generator) -> tuple[Policy, float]:
        cap, run, coast = rng.uniform(*SPEED_CAP), _act(fast), np.zeros(len(fast.action_space.low), np.float32)
        return (lambda obs: run(obs) if obs[FORWARD_SPEED] < cap else coast), rng.uniform(*NOISE_SD)
    return draw


def _check_task(task_id: str) -> None:
    if task_id not in TASKS:
        raise ValueError(f"no velocity behaviour for {task_id!r}; available: {list(TASKS)}")

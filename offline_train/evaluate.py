"""`python -m offline_train.evaluate`: closed-loop rollouts of a trained run on the boat task."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from safefql_core import evaluation
from safefql_core.envs import boat
from safefql_core.bundle import BundleError
from safefql_core.envs.boat_reference import feasible_mask
from safefql_core.runtime import RuntimeConfig, load_runtime
from safefql_core.training import RunError, load_run

# The deployed boat decision's fallback candidates: the eight compass headings.
BOAT_FALLBACKS = [[float(np.cos(a)), float(np.sin(a))] for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)]


def load_initial_states(path: str | None, episodes: int) -> np.ndarray:
    if path is None:
        states = boat.evaluation_states()
        if episodes > len(states):
            raise RunError(f"--episodes {episodes} exceeds the {len(states)} fixed evaluation states; "
                           "pass --init-states for a larger set")
        return states[:episodes]
    file = Path(path)
    if not file.is_file():
        raise RunError(f"--init-states file {file} not found")
    states = np.load(file)
    if states.ndim != 2 or states.shape[1] != boat.OBS_DIM or not np.isfinite(states).all():
        raise RunError(f"--init-states must be a finite (N, {boat.OBS_DIM}) array; got shape {states.shape}")
    return states[:episodes]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m offline_train.evaluate", description=__doc__)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="run directory written by offline_train.fit (the raw actor)")
    source.add_argument("--bundle", help="policy bundle: evaluate the deployed decision (actor + "
                                         "calibrated check + fallback candidates), as the robot runs it")
    p.add_argument("--episodes", type=int, default=500)
    p.add_argument("--init-states", help="(N, 2) .npy of initial states (default: the fixed set)")
    p.add_argument("--steps", type=int, default=boat.EPISODE_STEPS,
                   help=f"episode length (default {boat.EPISODE_STEPS}, the training horizon)")
    p.add_argument("--json", help="write the summary here")
    p.add_argument("--plot", help="write a PNG map of the trajectories here")
    p.add_argument("--noise", choices=["zero", "sample"], default="zero",
                   help="actor noise z: zero (deterministic, default) or sampled")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled noise (and of FISOR's candidates)")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)  # FISOR's candidate sampling draws from the global generator
    modes = None
    try:
        states = load_initial_states(args.init_states, args.episodes)
        if args.run:
            learner, meta = load_run(args.run)
            policy = evaluation.torch_policy(learner, args.noise, args.seed)
        else:
            runtime = load_runtime(args.bundle, RuntimeConfig(noise=args.noise, seed=args.seed,
                                                              fallback_actions=BOAT_FALLBACKS))
            meta = {"algo": runtime.bundle.algo, **runtime.bundle.meta["training"],
                    "trained_steps": runtime.bundle.meta["training"]["steps"], "train_seconds": float("nan")}
            policy, modes = evaluation.runtime_policy(runtime)
    except (RunError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = evaluation.rollout(policy, states, keep_trajectories=bool(args.plot), steps=args.steps)
    feasible = feasible_mask(states)
    name = meta.get("variant") or meta["algo"]  # e.g. safefql-nodistill, a safefql learner
    summary = {"run": str(args.run or args.bundle), "algo": meta["algo"], "variant": name, "seed": meta["seed"],
               "trained_steps": meta["trained_steps"], "train_seconds": round(meta["train_seconds"], 1),
               "noise": args.noise, "steps": args.steps, **evaluation.summarize(result, feasible)}
    if modes is not None:
        summary["decision_modes"] = dict(modes)
        summary["threshold"] = runtime.threshold
    f = summary["feasible"]
    print(f"{name} seed {meta['seed']}: {summary['count']} episodes, "
          f"mean return {summary['mean_return']:.1f}, mean violations {summary['mean_violations']:.3f}, "
          f"zero-violation {summary['zero_violation_rate']:.1%}, goal {summary['goal_reached_rate']:.1%} "
          f"| feasible ({f['count']}): "
          f"return {f.get('mean_return', float('nan')):.1f}, zero-violation {f.get('zero_violation_rate', float('nan')):.1%} "
          f"| doomed: {summary['doomed']['count']}"
          + (f" | decisions {dict(modes)}" if modes is not None else ""))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2))
    if args.plot:
        evaluation.plot_trajectories(args.plot, result["trajectories"], result["violations"], feasible,
                                     f"{name} seed {meta['seed']}: return {summary['mean_return']:.1f}, "
                                     f"zero-violation {summary['zero_violation_rate']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

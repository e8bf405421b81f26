"""`python -m offline_train.evaluate`: closed-loop rollouts of a trained run or a bundle.

On the boat (the default task) the episodes start from a fixed set of initial states, by
default the test set (`--init-states`: test, validation for tuning, the old evaluation set,
or a .npy file; safefql_core.envs.boat.STATE_SETS), and doomed starts are reported apart.
On a Safety Gymnasium task (the run's training task, or `--task`) they are resets with seeds --seed,
--seed+1, ..., scored raw and DSRL-normalised
(normalized_reward, normalized_cost at kappa = 10, 20, 40, 80; safefql_core.envs.dsrl).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from offline_train import diffdrive_evaluate
from offline_train.cli import (
    add_allow_partial_argument,
    add_threads_argument,
    at_least,
    prepare_output_file,
    set_threads,
    write_json,
)
from offline_train.export import task_description
from safefql_core import evaluation, gym_evaluation
from safefql_core.bundle import BundleError, load_bundle
from safefql_core.envs import boat
from safefql_core.envs.boat_reference import feasible_mask
from safefql_core.runtime import RuntimeConfig, load_runtime
from safefql_core.tasks import TaskSpec, simulator_mismatch
from safefql_core.training import RunError, load_run

GYM_EPISODES = 10  # DSRL/OSRL evaluate over 10 episodes per seed
# The deployed boat decision's fallback candidates: the eight compass headings.
BOAT_FALLBACKS = [[float(np.cos(a)), float(np.sin(a))] for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)]


def load_initial_states(choice: str, episodes: int | None) -> np.ndarray:
    """The first `episodes` states (all by default) of `--init-states`."""
    states = boat.load_initial_states(choice)
    if episodes is not None and episodes > len(states):
        raise RunError(f"--episodes {episodes} exceeds the {len(states)} states of --init-states {choice}; "
                       "pass a larger set")
    return states[:episodes]


def bundle_task(bundle: str, task: str | None) -> str:
    """The task a bundle was trained on (it records it); --task may only repeat it."""
    recorded = load_bundle(bundle, check=False).meta["task"]["name"]
    if task is not None and task != recorded:
        raise RunError(f"--task {task} contradicts the bundle, trained on task '{recorded}'; leave --task out")
    return recorded


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m offline_train.evaluate", description=__doc__)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="run directory written by offline_train.fit (the raw actor)")
    source.add_argument("--bundle", help="policy bundle: evaluate the deployed decision (actor + "
                                         "calibrated check + fallback candidates), as the robot runs it")
    p.add_argument("--task", help="boat or a Safety Gymnasium id (default: the task the run or bundle was "
                                  "trained on; a bundle's task cannot be changed)")
    p.add_argument("--episodes", type=int, help="boat: how many of the initial states (default: all); "
                                               f"Safety Gymnasium: episodes (default {GYM_EPISODES})")
    p.add_argument("--init-states", help=f"boat: a named set ({', '.join(boat.STATE_SETS)}; default test, the "
                                         "reporting set; tune on validation) or an (N, 2) .npy of x, y states; "
                                         "diffdrive: evaluation (default), validation or an (N, 3) .npy of x, y, yaw")
    p.add_argument("--steps", type=int, help=f"episode length (boat default {boat.EPISODE_STEPS}, the "
                                            "training horizon; Safety Gymnasium: the task's own limit)")
    p.add_argument("--json", help="write the summary here")
    p.add_argument("--plot", help="write a PNG map of the trajectories here")
    p.add_argument("--noise", choices=["zero", "sample"], default="zero",
                   help="actor noise z: zero (deterministic, default) or sampled")
    p.add_argument("--proposals", type=int, default=1,
                   help="--bundle only: actor noises per tick; above 1 the runtime sends the one of highest "
                        "Q_reward among those that pass the safety check (docs/DESIGN.md, \"Proposals\")")
    p.add_argument("--threshold", type=float,
                   help="--bundle only: use this δ* instead of the bundle's calibrated one, to see what a "
                        "threshold would do before calibrating for it (offline_train.calibrate)")
    p.add_argument("--out-of-range", choices=["reject", "warn"], default="reject",
                   help="--bundle only: a state outside the trained observation range is rejected (stop action, "
                        "the deployed default) or decided on anyway (warn)")
    p.add_argument("--seed", type=at_least(0), default=0, help="seed of the sampled noise (and of FISOR's candidates); "
                                                       "Safety Gymnasium: also the first reset seed")
    add_threads_argument(p)
    add_allow_partial_argument(p)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)  # FISOR's candidate sampling draws from the global generator
    modes, threshold = None, None   # both only for a --bundle's deployed decision
    try:
        set_threads(args.threads)
        json_path = prepare_output_file(args.json, "--json")
        if args.run:
            if args.proposals != 1 or args.threshold is not None or args.out_of_range != "reject":
                raise RunError("--proposals, --threshold and --out-of-range are settings of the deployed decision: "
                               "evaluate a --bundle (python -m offline_train.export --run RUN --out RUN/bundle)")
            learner, meta = load_run(args.run, allow_partial=args.allow_partial)
            task = args.task or meta.get("task", "boat")
            recorded = task_description(meta)  # what its bundle would record about the task
            policy = evaluation.torch_policy(learner, args.noise, args.seed)
        else:
            task = bundle_task(args.bundle, args.task)
            fallbacks = {"boat": BOAT_FALLBACKS, diffdrive_evaluate.TASK: diffdrive_evaluate.FALLBACKS}.get(task, [])
            runtime = load_runtime(args.bundle, RuntimeConfig(noise=args.noise, seed=args.seed, threads=args.threads,
                                                              fallback_actions=fallbacks, proposals=args.proposals,
                                                              threshold=args.threshold,
                                                              out_of_range=args.out_of_range))
            meta = {"algo": runtime.bundle.algo, **runtime.bundle.meta["training"],
                    "trained_steps": runtime.bundle.meta["training"]["steps"], "train_seconds": float("nan")}
            recorded = runtime.bundle.meta["task"]
            policy, modes = evaluation.runtime_policy(runtime)
            threshold = runtime.threshold
        if task == diffdrive_evaluate.TASK:  # its own simulator, for any spec of its messages (it checks)
            if args.plot:
                raise RunError("--plot is boat-only")
            write_json(json_path, diffdrive_evaluate.evaluate(policy, TaskSpec.of_task(recorded), args,
                                                              header(args, meta, task), modes, threshold))
            return 0
        no_simulator = simulator_mismatch(task, recorded.get("spec"))
        if no_simulator:
            bundle = args.bundle or f"{args.run}/bundle"
            raise RunError(f"{no_simulator}: there is nothing to roll out in closed loop. What can be done instead "
                           "is an open-loop replay of a recording through the deployed decision: python -m "
                           f"offline_train.replay --bag BAG --bundle {bundle} --out REPORT_DIR (per recorded state: "
                           "the logged and the policy's action, Q_safe, interventions, and the warning lead before "
                           "each logged violation)")
        if task != "boat":
            if args.init_states or args.plot:
                raise RunError("--init-states and --plot are boat-only")
            return evaluate_safety_gym(policy, task, args, meta, modes, threshold,
                                       recorded.get("action_repeat", 1), json_path)
        init_states = args.init_states or "test"
        states = load_initial_states(init_states, args.episodes)
        plot_path = prepare_output_file(args.plot, "--plot")
    except (RunError, BundleError, ImportError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = evaluation.rollout(policy, states, keep_trajectories=bool(args.plot),
                                steps=args.steps or boat.EPISODE_STEPS)
    feasible = feasible_mask(states)
    summary = {**header(args, meta, "boat"), "init_states": init_states, "steps": args.steps or boat.EPISODE_STEPS,
               **evaluation.summarize(result, feasible)}
    name = summary["variant"]
    if modes is not None:
        summary["decision_modes"] = dict(modes)
        summary["threshold"] = threshold
    f = summary["feasible"]
    print(f"{name} seed {meta['seed']}: {summary['count']} episodes from --init-states {init_states}, "
          f"mean return {summary['mean_return']:.1f}, mean violations {summary['mean_violations']:.3f}, "
          f"zero-violation {summary['zero_violation_rate']:.1%}, goal {summary['goal_reached_rate']:.1%} "
          f"| feasible ({f['count']}): "
          f"return {f.get('mean_return', float('nan')):.1f}, "
          f"zero-violation {f.get('zero_violation_rate', float('nan')):.1%} "
          f"| doomed: {summary['doomed']['count']}"
          + (f" | decisions {dict(modes)}" if modes is not None else ""))
    write_json(json_path, summary)
    if plot_path:
        evaluation.plot_trajectories(str(plot_path), result["trajectories"], result["violations"], feasible,
                                     f"{name} seed {meta['seed']}: return {summary['mean_return']:.1f}, "
                                     f"zero-violation {summary['zero_violation_rate']:.1%}")
        print(f"wrote {plot_path}")
    return 0


def header(args: argparse.Namespace, meta: dict, task: str) -> dict:
    """What was evaluated: the summary's first keys, the same for every task."""
    return {"run": str(args.run or args.bundle), "task": task, "algo": meta["algo"],
            "variant": meta.get("variant") or meta["algo"],  # e.g. safefql-nodistill, a safefql learner
            "seed": meta["seed"],
            "trained_steps": meta["trained_steps"], "train_seconds": round(meta["train_seconds"], 1),
            "noise": args.noise, "proposals": args.proposals}


def evaluate_safety_gym(policy: evaluation.Policy, task: str, args: argparse.Namespace, meta: dict,
                        modes, threshold: float | None, action_repeat: int, json_path: Path | None) -> int:
    """Episodes with reset seeds --seed.. on a Safety Gymnasium task, raw and DSRL-normalised;
    the policy acts every `action_repeat` steps, its training data's decision period."""
    result = gym_evaluation.rollout(policy, task, args.episodes or GYM_EPISODES, args.seed, args.steps,
                                    action_repeat)
    summary = {**header(args, meta, task), "action_repeat": action_repeat,
               **gym_evaluation.summarize(result, task)}
    if modes is not None:
        summary["decision_modes"] = dict(modes)
        summary["threshold"] = threshold
    print(f"{summary['variant']} seed {meta['seed']} on {task}: {gym_evaluation.describe(summary)}"
          + (f" | δ*={threshold:.3f}, decisions {dict(modes)}" if modes is not None else ""))
    write_json(json_path, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

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

from offline_train.cli import (
    add_allow_partial_argument,
    add_threads_argument,
    at_least,
    set_threads,
    write_json,
)
from safefql_core import evaluation
from safefql_core.bundle import BundleError
from safefql_core.envs import boat, diffdrive_evaluation
from safefql_core.pipeline import diffdrive_evaluate
from safefql_core.pipeline.evaluate import GYM_EPISODES, EvaluateOptions, Evaluation, describe, evaluate
from safefql_core.pipeline.files import prepare_output_file
from safefql_core.training import RunError


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
    p.add_argument("--noise", choices=["zero", "sample"],
                   help="actor noise z: zero (deterministic) or sampled; default: zero for a --run, the bundle's "
                        "decision for a --bundle (another one needs --override-decision)")
    p.add_argument("--proposals", type=at_least(1),
                   help="--bundle only: actor noises per tick; above 1 the runtime sends the one of highest "
                        "Q_reward among those that pass the safety check (docs/DESIGN.md, \"Proposals\"). "
                        "Default: the bundle's decision; another value needs --override-decision")
    p.add_argument("--candidates", type=at_least(0),
                   help="--bundle only: extra actor samples scored on intervention (default: the bundle's)")
    p.add_argument("--override-decision", action="store_true",
                   help="--bundle only: run --noise/--proposals/--candidates although they differ from the "
                        "bundle's decision, whose δ* then certifies another decision (the summary says so)")
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
    try:
        set_threads(args.threads)
        json_path = prepare_output_file(args.json, "--json")
        plot_path = prepare_output_file(args.plot, "--plot")
        scored = evaluate(EvaluateOptions(
            run=args.run, bundle=args.bundle, task=args.task, episodes=args.episodes, init_states=args.init_states,
            steps=args.steps, noise=args.noise, proposals=args.proposals, candidates=args.candidates,
            override_decision=args.override_decision, threshold=args.threshold,
            out_of_range=args.out_of_range, seed=args.seed, threads=args.threads,
            allow_partial=args.allow_partial, trajectories=bool(args.plot)))
    except (RunError, BundleError, ImportError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = scored.summary
    for warning in summary.get("decision_warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    print(describe(summary))
    write_json(json_path, summary)
    if plot_path:
        plot(str(plot_path), scored)
        print(f"wrote {plot_path}")
    return 0


def plot(path: str, scored: Evaluation) -> None:
    """The map of the trajectories (--plot), in the robot's own arena."""
    summary = scored.summary
    if summary["task"] == diffdrive_evaluate.TASK:
        title = (f"{summary['variant']} seed {summary['seed']}, {summary['starts']} starts: zero-collision "
                 f"{summary['zero_collision_rate']:.1%}, goal {summary['goal_reached_rate']:.1%}")
        diffdrive_evaluation.plot_episodes(path, scored.rollout, title)
        return
    title = (f"{summary['variant']} seed {summary['seed']}: return {summary['mean_return']:.1f}, "
             f"zero-violation {summary['zero_violation_rate']:.1%}")
    evaluation.plot_trajectories(path, scored.rollout["trajectories"], scored.rollout["violations"],
                                 scored.feasible, title)


if __name__ == "__main__":
    sys.exit(main())

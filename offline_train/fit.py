"""`python -m offline_train.fit`: train a learner on an offline dataset, or go from a rosbag2
to a deployable bundle in one command (`--bag`: convert to <out>/dataset.h5 -> train ->
calibrate -> export to <out>/bundle)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from offline_train.cli import (
    add_bag_arguments,
    add_decision_arguments,
    add_set_argument,
    add_threads_argument,
    at_least,
    bag_options,
    decision_changes,
    parse_override,
    set_threads,
)
from safefql_core.bundle import BundleError
from safefql_core.data import DatasetError
from safefql_core.learners import CAPABILITIES
from safefql_core.pipeline import calibrate, export
from safefql_core.pipeline.convert import load_spec
from safefql_core.pipeline.files import BUNDLE
from safefql_core.pipeline.train import (
    CURVE_STATES,
    boat_evaluator,
    check_dataset_task,
    convert_into_run,
    load_overrides,
    resolve_config,
)
from safefql_core.training import ALGOS, RunError, TrainingInterrupted, TrainOptions, learner_name, train


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m offline_train.fit", description=__doc__)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="dataset HDF5 (offline_train.collect, or DSRL layout)")
    source.add_argument("--bag", nargs="+", help="rosbag2 directories, bare .mcap/.db3 files or folders of them, "
                                                 "converted through the config's task spec into one dataset")
    p.add_argument("--config", help="task YAML with per-algorithm settings (e.g. config/boat.yaml)")
    p.add_argument("--task", help="boat or a Safety Gymnasium id, e.g. SafetyPointCircle1-v0: trains with "
                                  "config/<task>.yaml unless --config is given (default: the config's task, boat)")
    add_bag_arguments(p)
    p.add_argument("--out", required=True, help="run directory (resumed if it holds a checkpoint)")
    p.add_argument("--seed", type=at_least(0), default=0)
    p.add_argument("--steps", type=at_least(1), help="override the number of gradient steps")
    p.add_argument("--algo", default="safefql", choices=sorted(ALGOS))
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--no-cuda-graph", action="store_true",
                   help="on CUDA, run the update eagerly instead of replaying it as a CUDA graph")
    add_threads_argument(p)
    add_set_argument(p, "KEY=VALUE", "alpha=3 batch_size=256")
    p.add_argument("--tensorboard", action="store_true", help="also log to <out>/tb")
    p.add_argument("--log-every", type=at_least(1), default=500, metavar="N",
                   help="a metrics.csv row (mean losses) every N steps (default 500)")
    p.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help=f"boat: every N steps, roll out the actor from the feasible ones of the {CURVE_STATES} "
                        "set's initial states (the tuning set, never the test set) and log return / zero-violation "
                        "rate to <out>/eval.csv, plotted as <out>/eval.png")
    p.add_argument("--no-progress", action="store_true")
    add_decision_arguments(p)  # with --bag: the decision calibrated and exported
    p.add_argument("--calibration-n", type=at_least(1), default=None, metavar="N",
                   help="with --bag: simulated start states per calibration set (calibrate --n; default 2000, "
                        "the diff-drive robot's 500). "
                        "Each is rolled out through the deployed decision, one decide() per state and tick")
    args = p.parse_args(argv)
    try:
        task, overrides = load_overrides(args.config, args.algo, args.task)
        overrides.update(parse_override(item) for item in args.set)
        if args.steps is not None:
            overrides["steps"] = args.steps
        set_threads(args.threads)
        opts = TrainOptions(data=args.data, out=args.out, algo=args.algo, seed=args.seed, overrides=overrides,
                            task=task, device=args.device, cuda_graph=not args.no_cuda_graph,
                            tensorboard=args.tensorboard, log_every=args.log_every,
                            progress=not args.no_progress, eval_every=args.eval_every,
                            evaluator=boat_evaluator(task, args.eval_every))
        if args.bag is not None:
            spec = load_spec(resolve_config(args.config, args.task))
            opts.data = convert_into_run(args.bag, spec, bag_options(args), opts, log=print)
        else:
            check_dataset_task(opts.data, task)
        out = train(opts)
        print(f"trained run in {out}")
        if args.eval_every:
            from safefql_core.evaluation import plot_learning_curve
            plot_learning_curve(Path(out) / "eval.csv", Path(out) / "eval.png")
            print(f"learning curve on the {CURVE_STATES} starts: {Path(out) / 'eval.png'}")
        can = CAPABILITIES[learner_name(args.algo)]
        if args.bag is not None and can.safety_critic and can.deployable:   # δ* is calibrated on a bundle's decision
            print(calibrate.describe(calibrate.calibrate_run(str(out), n=args.calibration_n, source="auto",
                                                             seed=args.seed, log=print,
                                                             decision_changes=decision_changes(args))))
            bundle = str(Path(out) / BUNDLE)
            print(export.describe(bundle, export.export_run(str(out), bundle, args.seed)))
    except TrainingInterrupted as exc:
        print(f"{exc}", file=sys.stderr)
        return 130  # the shell's code for a run ended by SIGINT
    except (DatasetError, RunError, BundleError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m offline_train.fit`: train a learner on an offline dataset, or go from a rosbag2
to a deployable bundle in one command (`--bag`: convert to <out>/dataset.h5 -> train ->
calibrate -> export to <out>/bundle)."""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import yaml

from offline_train import calibrate, export
from offline_train.cli import add_set_argument, add_threads_argument, at_least, parse_override, set_threads
from offline_train.convert import BagOptions, add_bag_arguments, convert, load_spec
from safefql_core.bundle import BundleError
from safefql_core.data import DatasetError
from safefql_core.tasks import TASK_CONFIGS
from safefql_core.training import (
    ALGOS,
    RunError,
    TrainingInterrupted,
    TrainOptions,
    check_resumable,
    get_algo,
    learner_name,
    train,
)

DATASET = "dataset.h5"  # where --bag's conversion lands inside the run directory
BUNDLE = "bundle"       # where --bag's bundle lands inside the run directory


def task_config(task: str) -> Path:
    """config/<task>.yaml, the settings `--task` trains with."""
    path = TASK_CONFIGS / f"{task}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in TASK_CONFIGS.glob("*.yaml") if "task" in (yaml.safe_load(p.read_text()) or {}))
        raise RunError(f"no config for task {task!r} in {TASK_CONFIGS.resolve()} (tasks with one: {known}); "
                       f"copy the closest and pass it with --config")
    return path


def load_overrides(config: str | None, algo: str, task: str | None = None) -> tuple[str, dict]:
    """(task, algo overrides) from a task YAML: `task: <id>` and one mapping per algo.

    Without --config, --task picks config/<task>.yaml; with both, they must agree.
    """
    if config is None:
        config = str(task_config(task or "boat"))
    path = Path(config)
    if not path.is_file():
        raise RunError(f"config file {path} not found; see config/boat.yaml for the format")
    doc = yaml.safe_load(path.read_text()) or {}
    if task is not None and doc.get("task", "boat") != task:
        raise RunError(f"--task {task} contradicts {path}, which is for task {doc.get('task', 'boat')!r}")
    if algo in doc:
        return doc.get("task", "boat"), dict(doc[algo] or {})
    # A variant (safefql-nodistill, bc-safe, ...) reads its learner's section, less the keys
    # that define the variant (nodistill's alpha = 0 is not the task's alpha to override).
    fixed = get_algo(algo).overrides
    section = doc.get(learner_name(algo)) or {}
    return doc.get("task", "boat"), {k: v for k, v in section.items() if k not in fixed}


def check_dataset_task(data: str, task: str) -> None:
    """A dataset that names its task (offline_train.collect writes `task`) must match; a DSRL
    file downloaded elsewhere names none and trains as the task given."""
    import h5py
    try:
        with h5py.File(data, "r") as f:
            stored = f.attrs.get("task")
    except OSError:
        return  # unreadable or missing: load_dataset reports it with the fix
    if stored is not None and str(stored) != task:
        raise RunError(f"{data} holds {str(stored)!r} data but training is for task {task!r}; "
                       f"pass --task {stored} (or the config of that task)")


def convert_into_run(args: argparse.Namespace, opts: TrainOptions) -> str:
    """--bag: convert into a staging file beside the run's dataset, check that the run (if it
    has a checkpoint) may resume on it, then rename it over the dataset; a refused resume
    leaves the run's own dataset as it was, and no staging file behind."""
    data = Path(args.out) / DATASET
    staged = data.with_name(DATASET + ".converting")
    try:
        print(convert(args.bag, load_spec(args.config), staged, BagOptions.from_args(args),
                      progress=not args.no_progress).summary())
        check_resumable(replace(opts, data=str(staged)))
        os.replace(staged, data)
    finally:
        staged.unlink(missing_ok=True)
    return str(data)


CURVE_STATES = "validation"  # fit --eval-every's initial states (safefql_core.envs.boat.STATE_SETS)


def boat_evaluator(task: str, eval_every: int):
    """The learning-curve evaluator for --eval-every (boat only: it needs the simulator)."""
    if not eval_every:
        return None
    if eval_every < 0 or task != "boat":
        raise RunError(f"--eval-every needs a positive step count and the boat simulator (task {task!r})")
    from safefql_core.envs import boat
    from safefql_core.envs.boat_reference import feasible_mask
    from safefql_core.evaluation import learning_curve_evaluator
    states = boat.initial_states(CURVE_STATES)   # a curve picks steps and settings: tune on validation
    return learning_curve_evaluator(states, feasible_mask(states))


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
            opts.data = convert_into_run(args, opts)
        else:
            check_dataset_task(opts.data, task)
        out = train(opts)
        print(f"trained run in {out}")
        if args.eval_every:
            from safefql_core.evaluation import plot_learning_curve
            plot_learning_curve(Path(out) / "eval.csv", Path(out) / "eval.png")
            print(f"learning curve on the {CURVE_STATES} starts: {Path(out) / 'eval.png'}")
        if args.bag is not None and learner_name(args.algo) != "bc":
            print(calibrate.describe(calibrate.calibrate_run(str(out), source="auto", seed=args.seed)))
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

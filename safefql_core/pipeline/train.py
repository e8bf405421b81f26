"""The `train` step's preparation: the settings a task trains with (config/<task>.yaml), the
dataset's task check, a bag converted into the run directory, and the boat's learning-curve
evaluator. The loop itself is safefql_core.training.train; offline_train.fit chains these
with the calibrate and export steps."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import yaml

from safefql_core.pipeline import Log, quiet
from safefql_core.pipeline.convert import BagOptions, convert
from safefql_core.pipeline.files import DATASET
from safefql_core.tasks import TASK_CONFIGS, TaskSpec
from safefql_core.training import RunError, TrainOptions, check_resumable, get_algo, learner_name


def task_config(task: str) -> Path:
    """config/<task>.yaml, the settings `--task` trains with."""
    path = TASK_CONFIGS / f"{task}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in TASK_CONFIGS.glob("*.yaml") if "task" in (yaml.safe_load(p.read_text()) or {}))
        raise RunError(f"no config for task {task!r} in {TASK_CONFIGS.resolve()} (tasks with one: {known}); "
                       f"copy the closest and pass it with --config")
    return path


def resolve_config(config: str | None, task: str | None) -> str:
    """The task YAML a run uses: --config, else config/<task>.yaml (the boat's without --task).
    One answer for the training settings and for --bag's spec, so `--bag B --task T` converts
    with T's spec."""
    return config or str(task_config(task or "boat"))


def load_overrides(config: str | None, algo: str, task: str | None = None) -> tuple[str, dict]:
    """(task, algo overrides) from a task YAML: `task: <id>` and one mapping per algo.

    Without --config, --task picks config/<task>.yaml; with both, they must agree.
    """
    path = Path(resolve_config(config, task))
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


def convert_into_run(bags: Sequence[str], spec: TaskSpec, options: BagOptions, opts: TrainOptions,
                     log: Log = quiet) -> str:
    """fit --bag: convert into a staging file beside the run's dataset (its summary goes to
    `log`), check that the run (if it has a checkpoint) may resume on it, then rename it over
    the dataset; a refused resume leaves the run's own dataset as it was, and no staging file
    behind. Returns the dataset's path."""
    data = Path(opts.out) / DATASET
    staged = data.with_name(DATASET + ".converting")
    try:
        log(convert(bags, spec, staged, options, progress=opts.progress).summary())
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

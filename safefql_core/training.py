"""Offline training loop shared by every learner: seeding, logging, checkpoints, resume.

A run directory holds `config.yaml` (the fully resolved config, dataset fingerprint and
seed), `metrics.csv`, and `checkpoint.pt` — a dict of state_dicts and plain values, loaded
with `weights_only=True`, so a checkpoint never executes code when it is opened.

`--algo` names come from one registry, ALGOS: each is a learner class with its config class,
plus the config overrides and the dataset filter that make it a baseline or an ablation
(`safefql-nodistill` is SafeFQL with alpha = 0, `bc-safe` is BC on the violation-free
episodes). config.yaml records the entry as `variant` and the learner as `algo` — the name a
run is rebuilt, calibrated and exported under — and the resolved config with the overrides in.
"""
from __future__ import annotations

import csv
import io
import math
import os
import pickle
import random
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml
from torch import nn

from safefql_core.agent import SafeFQL, SafeFQLConfig
from safefql_core.bc import BC, BCConfig
from safefql_core.config import ConfigMixin
from safefql_core.critics import is_old_layout
from safefql_core.data import (
    DEFAULT_COST_SCALE,
    Dataset,
    DatasetError,
    TensorBatches,
    fingerprint,
    load_dataset,
    violation_free_episodes,
)
from safefql_core.fisor import FISOR, FISORConfig
from safefql_core.safeifql import SafeIFQL, SafeIFQLConfig
from safefql_core.tasks import BUILTIN, TaskSpec
from safefql_core.throughput import keep_freed_memory


@dataclass(frozen=True)
class Algo:
    """A named training recipe: learner + config class, fixed overrides, optional data filter."""

    learner: type[nn.Module]
    config: type[ConfigMixin]
    overrides: dict[str, Any] = field(default_factory=dict)
    data_filter: Callable[[Dataset], Dataset] | None = None
    help: str = ""


ALGOS: dict[str, Algo] = {
    "safefql": Algo(SafeFQL, SafeFQLConfig, help="SafeFQL, feasibility-gated actor (default)"),
    "safefql-lagrangian": Algo(SafeFQL, SafeFQLConfig, {"actor_loss": "lagrangian"},
                               help="ablation: -Q_r + eta relu(Q_c) on every sample, no gate"),
    "safefql-nodistill": Algo(SafeFQL, SafeFQLConfig, {"alpha": 0.0},
                              help="ablation: no distillation term (alpha = 0)"),
    "safefql-paperbackup": Algo(SafeFQL, SafeFQLConfig, {"safety_backup": "paper"},
                                help="ablation: the paper's safety backup max(l, g V_c(s'))"),
    "bc": Algo(BC, BCConfig, help="behaviour cloning on all data"),
    "bc-safe": Algo(BC, BCConfig, data_filter=violation_free_episodes,
                    help="behaviour cloning on the violation-free episodes only"),
    "fisor": Algo(FISOR, FISORConfig, help="FISOR-style baseline: weighted DDPM + argmin Q_safe"),
    "safeifql": Algo(SafeIFQL, SafeIFQLConfig,
                     help="SafeIFQL baseline: weighted flow + best feasible of N (evaluate only, no bundle)"),
}
CHECKPOINT = "checkpoint.pt"
CONFIG = "config.yaml"
# Config keys added after runs had been written whose default is NOT what those runs were
# trained with: a config.yaml without the key gets this value, not today's default.
TRAINED_BEFORE_KEY = {"n_step": 1}


class RunError(RuntimeError):
    """A run directory that cannot be used as asked; the message says why and what to do."""


class TrainingInterrupted(RunError):
    """SIGINT / SIGTERM during training: the checkpoint of the last finished step was saved."""


@dataclass
class TrainOptions:
    data: str
    out: str
    algo: str = "safefql"
    seed: int = 0
    overrides: dict[str, Any] | None = None
    task: str = "boat"
    device: str = "cpu"
    cuda_graph: bool = True  # on a CUDA device, replay the update as a CUDA graph (cuda_graph.py)
    log_every: int = 500
    checkpoint_every: int = 5000
    tensorboard: bool = False
    progress: bool = True
    # Closed-loop learning curve: every `eval_every` steps (0: never) `evaluator(learner)`
    # returns metrics that go to <out>/eval.csv (and TensorBoard as eval/*). It must not
    # touch torch's global generator, so a run trains the same weights with or without it.
    eval_every: int = 0
    evaluator: Callable[[nn.Module], dict[str, float]] | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    if name not in ("cpu", "cuda", "auto") and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise RunError(f"--device must be cpu, cuda, cuda:N or auto, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    return torch.device(name)


def get_algo(name: str) -> Algo:
    if name not in ALGOS:
        raise RunError(f"unknown --algo '{name}'; available: {sorted(ALGOS)}")
    return ALGOS[name]


def learner_name(name: str) -> str:
    """The plain registry entry (no overrides, no filter) of a variant's learner class:
    what its runs are rebuilt, calibrated and exported as (`safefql-nodistill` -> `safefql`)."""
    cls = get_algo(name).learner
    return next(k for k, a in ALGOS.items() if a.learner is cls and not a.overrides and a.data_filter is None)


def resolve_config(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The entry's config class defaults <- its fixed overrides <- the user's overrides.

    A user override may not contradict a key that defines the variant (alpha for
    safefql-nodistill): that would silently train a different method under its name.
    """
    algo, user = get_algo(name), dict(overrides or {})
    clash = {k: v for k, v in user.items() if k in algo.overrides and v != algo.overrides[k]}
    if clash:
        raise RunError(f"--algo {name} is defined by {algo.overrides}; the override(s) {clash} "
                       f"contradict it — use --algo {learner_name(name)} with those settings instead")
    return algo.config.from_dict({**algo.overrides, **user}).to_dict()


def build_learner(algo: str, algo_cfg: dict[str, Any], obs_dim: int, act_dim: int,
                  obs_mean: np.ndarray, obs_std: np.ndarray) -> nn.Module:
    entry = get_algo(algo)
    cfg = entry.config.from_dict(algo_cfg)
    return entry.learner(obs_dim, act_dim, cfg, torch.as_tensor(obs_mean), torch.as_tensor(obs_std))


def training_data(opts: TrainOptions) -> Dataset:
    """The dataset the run trains on: the file, through the entry's filter if it has one."""
    data = load_dataset(opts.data)
    data_filter = get_algo(opts.algo).data_filter
    return data if data_filter is None else data_filter(data)


def _check_task_dims(opts: TrainOptions, data: Dataset) -> None:
    """Data whose widths differ from its task's spec (the one it was converted with, else the
    task's built-in one) would train and export, then fail in calibration or on the robot."""
    recorded = data.attrs.get("task_spec")
    if recorded:
        spec = TaskSpec.from_dict(recorded, opts.task)
    elif opts.task in BUILTIN:
        spec = TaskSpec.builtin(opts.task)
    else:
        return
    if (spec.obs_dim, spec.act_dim) != (data.obs_dim, data.act_dim):
        raise RunError(f"{opts.data} has {data.obs_dim}-D observations and {data.act_dim}-D actions, but task "
                       f"{opts.task!r} reads {spec.obs_dim} state values {spec.observation_names} and {spec.act_dim} "
                       "command fields; train it as the task it was recorded for (--task / --config)")


def _resolved_config(opts: TrainOptions, data: Dataset) -> dict[str, Any]:
    _check_task_dims(opts, data)
    data_filter = get_algo(opts.algo).data_filter
    config = resolve_config(opts.algo, opts.overrides)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, by name
        mean, std = data.observations.mean(axis=0), data.observations.std(axis=0)
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise DatasetError(
            f"{opts.data}: the observations' mean or standard deviation is not finite in float32 (|obs| up to "
            f"{float(np.abs(data.observations).max()):.3g}): the networks cannot normalise them; rescale the "
            "observations (or the spec's fields) to a sensible range")
    return {
        "algo": learner_name(opts.algo),
        "variant": opts.algo,
        "task": opts.task,
        "seed": opts.seed,
        "data": str(opts.data),
        "dataset_filter": None if data_filter is None else data_filter.__name__,
        "dataset_fingerprint": fingerprint(data),  # of the filtered data: what was trained on
        "transitions": len(data),
        "obs_dim": data.obs_dim,
        "act_dim": data.act_dim,
        "obs_mean": mean.tolist(),
        "obs_std": std.tolist(),
        # What the runtime checks a deployed decision against: the observation range the
        # networks saw, and the margin range that bounds every safety value (and so δ*).
        "obs_min": data.observations.min(axis=0).tolist(),
        "obs_max": data.observations.max(axis=0).tolist(),
        "margin_range": _margin_range(data, config),
        "dataset_attrs": _plain(data.attrs),
        "config": config,
    }


def _margin_range(data: Dataset, config: dict[str, Any]) -> list[float]:
    """[min, max] of the margin signal l(s) the safety critic learns from. Its targets are
    combinations of l values, so every Q_safe and V_safe it learns lies in this range."""
    margins = data.margin_signal(config.get("cost_scale", DEFAULT_COST_SCALE))
    return [float(margins.min()), float(margins.max())]


def _plain(attrs: dict[str, Any]) -> dict[str, Any]:
    """Dataset attributes as plain YAML/JSON values (arrays -> lists), for config.yaml."""
    import json
    return json.loads(json.dumps(attrs, default=lambda x: x.tolist() if hasattr(x, "tolist") else str(x)))


def train(opts: TrainOptions) -> Path:
    """Train (or resume) a run; return its directory."""
    out = Path(opts.out)
    if opts.eval_every and opts.evaluator is None:
        raise RunError(f"eval_every={opts.eval_every} needs an evaluator (a function learner -> metrics); "
                       "fit --eval-every supplies the boat's")
    data = training_data(opts)
    resolved = _resolved_config(opts, data)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    checkpoint = None
    if ckpt_path.exists():  # every refusal to resume comes before the run's config is rewritten
        _check_resumable(out, resolved)
        checkpoint = _resumable_checkpoint(ckpt_path)
    _write_atomic(out / CONFIG, yaml.safe_dump(resolved, sort_keys=False))

    keep_freed_memory()  # fewer page faults per update (its doc)
    seed_everything(opts.seed)
    device = resolve_device(opts.device)
    learner = build_learner(opts.algo, resolved["config"], data.obs_dim, data.act_dim,
                            np.array(resolved["obs_mean"]), np.array(resolved["obs_std"])).to(device)
    cfg = learner.cfg
    batches = TensorBatches(data, device, opts.seed,
                            cost_scale=getattr(cfg, "cost_scale", 25.0),
                            timeout_is_terminal=getattr(cfg, "timeout_is_terminal", False),
                            horizon=getattr(cfg, "n_step", 1))
    start, elapsed = 0, 0.0
    if checkpoint is not None:
        start, elapsed = _restore(checkpoint, learner, batches)
        if start >= cfg.steps:
            print(f"{out}: already trained for {start} steps; nothing to do")
            return out
    for log in ("metrics.csv", "eval.csv"):  # rows logged after the checkpoint are trained again
        _drop_rows_after(out / log, start)

    writer = _tensorboard(out) if opts.tensorboard else None
    log_file = (out / "metrics.csv").open("a", newline="")
    # Fixed columns (phased schedules log different terms per phase): blanks where absent.
    csv_writer = csv.DictWriter(log_file, fieldnames=["step", "seconds", *learner.METRICS], restval="")
    if log_file.tell() == 0:
        csv_writer.writeheader()
    sums: dict[str, Any] = defaultdict(float)  # tensors from update(), or floats
    count = 0
    steps = range(start, cfg.steps)
    if opts.progress:
        from tqdm import tqdm
        steps = tqdm(steps, initial=start, total=cfg.steps, desc=f"fit {opts.algo}", unit="step",
                     mininterval=2.0)
    update = learner.update
    if device.type == "cuda" and opts.cuda_graph:
        from safefql_core.cuda_graph import GraphedUpdate
        update = GraphedUpdate(learner)
    t0 = time.perf_counter() - elapsed
    checked = start  # the last step whose metrics were read back and found finite

    def check_finite(done: int) -> None:
        """The metrics since the last check, read back (a wait on the device) only when a row is
        logged or a checkpoint written: a non-finite loss anywhere since then stops training
        before anything of those steps is saved."""
        nonlocal checked
        for k, v in sums.items():
            if not math.isfinite(float(v)):
                raise RunError(f"{out}: training diverged between steps {checked} and {done}: {k} = {float(v)}. "
                               f"Nothing of those steps was saved ({CHECKPOINT} holds the last good state, if "
                               "any); lower lr, raise batch_size, or rescale the data, then train into a new --out")
        checked = done

    with _stop_on_signals() as stop, log_file:
        for step in steps:
            if stop.is_set():
                check_finite(step)
                _save_checkpoint(ckpt_path, learner, batches, step, time.perf_counter() - t0)
                raise TrainingInterrupted(f"{out}: interrupted at step {step} of {cfg.steps}; {CHECKPOINT} saved — "
                                          "run the same command again to resume from it")
            done = step + 1
            for k, v in update(batches.sample(cfg.batch_size), step).items():
                sums[k] += v  # tensors: read back only in check_finite
            count += 1
            log_now = done % opts.log_every == 0 or done == cfg.steps
            checkpoint_now = done % opts.checkpoint_every == 0 or done == cfg.steps
            if log_now or checkpoint_now:
                check_finite(done)
            if log_now:
                row = {"step": done, "seconds": round(time.perf_counter() - t0, 2),
                       **{k: float(v) / count for k, v in sums.items()}}
                csv_writer.writerow(row)
                log_file.flush()
                if writer is not None:
                    for k, v in row.items():
                        if k != "step":
                            writer.add_scalar(k, v, done)
                sums.clear()
                count = 0
            if opts.eval_every and (done % opts.eval_every == 0 or done == cfg.steps):
                curve = _log_eval(out, done, opts.evaluator(learner), writer)
                if opts.progress:
                    steps.set_postfix(curve, refresh=False)
            if checkpoint_now:
                _save_checkpoint(ckpt_path, learner, batches, done, time.perf_counter() - t0)
    if writer is not None:
        writer.close()
    return out


def _log_eval(out: Path, step: int, metrics: dict[str, float], writer) -> dict[str, float]:
    """Append one learning-curve row to <out>/eval.csv; return it rounded for the progress bar."""
    row = {"step": step, **{k: round(float(v), 4) for k, v in metrics.items()}}
    path = out / "eval.csv"
    new_file = not path.exists()
    with path.open("a", newline="") as f:
        csv_writer = csv.DictWriter(f, fieldnames=list(row))
        if new_file:
            csv_writer.writeheader()
        csv_writer.writerow(row)
    if writer is not None:
        for k, v in metrics.items():
            writer.add_scalar(f"eval/{k}", v, step)
    return {k: v for k, v in row.items() if k != "step"}


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise RunError("--tensorboard needs the 'tensorboard' package: "
                       "pip install -c constraints.txt tensorboard") from exc
    return SummaryWriter(str(out / "tb"))


def check_resumable(opts: TrainOptions) -> None:
    """Raise RunError if `opts.out` holds a checkpoint of another experiment than `opts`
    would train: what `fit --bag` checks on a freshly converted dataset before it replaces the
    run's own (a refused resume must not have overwritten the run's data)."""
    if (Path(opts.out) / CHECKPOINT).exists():
        _check_resumable(Path(opts.out), _resolved_config(opts, training_data(opts)))


def _check_resumable(out: Path, resolved: dict[str, Any]) -> None:
    """Refuse to resume a different experiment; a larger `steps` (extending a run) is fine.

    A run written before a config key or `variant` existed lacks them: the key counts as
    what the run was trained with (TRAINED_BEFORE_KEY, else the key's default), and its
    variant is its algo.
    """
    saved = _read_config(out)
    saved.setdefault("variant", saved.get("algo"))
    saved["config"] = {**get_algo(resolved["variant"]).config().to_dict(),
                       **_as_trained(saved.get("config") or {}, resolved["variant"])}
    strip = lambda cfg: {k: v for k, v in (cfg or {}).items() if k != "steps"}  # noqa: E731
    for key in ("algo", "variant", "seed", "dataset_fingerprint", "config"):
        same = (strip(saved.get(key)) == strip(resolved[key])) if key == "config" else saved.get(key) == resolved[key]
        if not same:
            raise RunError(
                f"{out} holds a run with a different {key} ({saved.get(key)!r} vs {resolved[key]!r}); "
                "resuming it would mix two experiments — pass a new --out or delete the directory"
            )


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while training: the loop finishes its step, saves a
    checkpoint and stops, instead of losing everything since the last periodic checkpoint.
    The previous handlers come back afterwards. Python delivers signals to the main thread
    only; elsewhere (a Ray worker's thread) the event is never set."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, lambda *_: stop.set())
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _drop_rows_after(path: Path, step: int) -> None:
    """Keep a log's header and its rows up to `step`: a resumed run logs the later steps again."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= step]
    if step == 0:
        path.unlink()
    elif len(kept) < len(rows):
        buf = io.StringIO()
        csv.writer(buf).writerows(kept)
        _write_atomic(path, buf.getvalue())


def _write_atomic(path: Path, text: str) -> None:
    """Write a file whole or not at all (a crash mid-write must not leave half a config)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise RunError(f"cannot write {path} ({exc}); {path.name} was left as it was") from None
    finally:
        tmp.unlink(missing_ok=True)


def _read_config(run: Path) -> dict[str, Any]:
    """A run's config.yaml, or RunError naming the damage (truncated, edited, not YAML)."""
    try:
        config = yaml.safe_load((run / CONFIG).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RunError(f"{run / CONFIG} cannot be read ({exc}); the run directory is damaged — "
                       "train into a new --out") from None
    missing = [k for k in ("algo", "seed", "obs_dim", "act_dim", "obs_mean", "obs_std", "config")
               if not isinstance(config, dict) or k not in config]
    if missing:
        raise RunError(f"{run / CONFIG} is truncated or not a run's config (lacks {missing}); the run directory "
                       "is damaged — train into a new --out")
    return config


def _read_checkpoint(path: Path, device: str = "cpu") -> dict[str, Any]:
    """A checkpoint's state, or RunError when it is truncated or not a checkpoint."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise RunError(f"{path} cannot be read ({str(exc).splitlines()[0]}): it is truncated or not a checkpoint; "
                       "train into a new --out, or delete it to train this run from the start") from None
    if not isinstance(state, dict) or not {"step", "elapsed", "model"} <= set(state):
        raise RunError(f"{path} is not a training checkpoint (a dict with step, elapsed, model, ...); "
                       "train into a new --out")
    return state


def _as_trained(config: dict[str, Any], algo: str) -> dict[str, Any]:
    """A saved config with the keys it predates (of its learner's config) set to what its
    run was trained with."""
    keys = {f.name for f in fields(get_algo(algo).config)}
    return {**{k: v for k, v in TRAINED_BEFORE_KEY.items() if k in keys and k not in config}, **config}


def _save_checkpoint(path: Path, learner: nn.Module, batches: TensorBatches, step: int,
                     elapsed: float) -> None:
    state = {
        "step": step,
        "elapsed": elapsed,
        "model": learner.state_dict(),
        "optimizer": learner.optimizer.state_dict(),
        "batches": batches.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _resumable_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint to resume from, or RunError when training cannot go on from it."""
    state = _read_checkpoint(path)
    if is_old_layout(state["model"]):
        raise RunError(f"{path} was written before the critics were stacked into one ensemble (commit 69c2da1): "
                       "evaluate, calibrate and export still read it, but its optimizer state "
                       "cannot resume training; train again with a new --out")
    return state


def _restore(state: dict[str, Any], learner: nn.Module, batches: TensorBatches) -> tuple[int, float]:
    learner.load_state_dict(state["model"])
    learner.optimizer.load_state_dict(state["optimizer"])
    batches.load_state_dict(state["batches"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), float(state["elapsed"])


def load_run(run_dir: str | Path, device: str = "cpu",
             allow_partial: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained learner from its run directory (for evaluation and export).

    A run whose last checkpoint is short of its configured steps is refused unless
    `allow_partial`: its `fit` is still running (or was stopped), and numbers from, or a
    bundle of, 5,000 of 6,000 steps must not pass for the finished run's.
    """
    run = Path(run_dir)
    if not (run / CONFIG).is_file() or not (run / CHECKPOINT).is_file():
        raise RunError(
            f"{run} is not a trained run (needs {CONFIG} and {CHECKPOINT}); train one with "
            f"`python -m offline_train.fit --data data/boat.h5 --out {run}`"
        )
    meta = _read_config(run)
    meta["config"] = _as_trained(meta["config"], meta["algo"])
    learner = build_learner(meta["algo"], meta["config"], meta["obs_dim"], meta["act_dim"],
                            np.array(meta["obs_mean"]), np.array(meta["obs_std"]))
    state = _read_checkpoint(run / CHECKPOINT, device)
    try:
        learner.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise RunError(f"{run / CHECKPOINT} does not fit the networks {CONFIG} describes ({str(exc).splitlines()[0]}); "
                       "the run directory mixes two runs — train into a new --out") from None
    meta["trained_steps"] = int(state["step"])
    meta["train_seconds"] = float(state["elapsed"])
    planned = int(meta["config"].get("steps", meta["trained_steps"]))
    if meta["trained_steps"] < planned and not allow_partial:
        raise RunError(f"{run} has trained {meta['trained_steps']:,} of its {planned:,} steps: its fit is still "
                       "running, or was stopped. Wait for it to finish (or run the same fit command again to "
                       "resume it), or pass --allow-partial to use its last checkpoint")
    return learner.to(device).eval(), meta

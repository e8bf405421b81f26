"""Offline training loop shared by every learner: seeding, logging, checkpoints, resume.

A run directory holds `config.yaml` (the fully resolved config, dataset fingerprint and
seed), `metrics.csv`, and `checkpoint.pt` — a dict of state_dicts and plain values, loaded
with `weights_only=True`, so a checkpoint never executes code when it is opened.
"""
from __future__ import annotations

import csv
import os
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from safefql_core.agent import SafeFQL, SafeFQLConfig
from safefql_core.bc import BC, BCConfig
from safefql_core.data import Dataset, TensorBatches, fingerprint, load_dataset
from safefql_core.fisor import FISOR, FISORConfig

ALGOS: dict[str, tuple[type[nn.Module], type]] = {
    "safefql": (SafeFQL, SafeFQLConfig),
    "bc": (BC, BCConfig),
    "fisor": (FISOR, FISORConfig),
}
CHECKPOINT = "checkpoint.pt"
CONFIG = "config.yaml"


class RunError(RuntimeError):
    """A run directory that cannot be used as asked; the message says why and what to do."""


@dataclass
class TrainOptions:
    data: str
    out: str
    algo: str = "safefql"
    seed: int = 0
    overrides: dict[str, Any] | None = None
    task: str = "boat"
    device: str = "cpu"
    log_every: int = 500
    checkpoint_every: int = 5000
    tensorboard: bool = False
    progress: bool = True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    return torch.device(name)


def algo_classes(algo: str) -> tuple[type[nn.Module], type]:
    if algo not in ALGOS:
        raise RunError(f"unknown --algo '{algo}'; available: {sorted(ALGOS)}")
    return ALGOS[algo]


def build_learner(algo: str, algo_cfg: dict[str, Any], obs_dim: int, act_dim: int,
                  obs_mean: np.ndarray, obs_std: np.ndarray) -> nn.Module:
    cls, cfg_cls = algo_classes(algo)
    cfg = cfg_cls.from_dict(algo_cfg)
    return cls(obs_dim, act_dim, cfg, torch.as_tensor(obs_mean), torch.as_tensor(obs_std))


def _resolved_config(opts: TrainOptions, data: Dataset) -> dict[str, Any]:
    algo_cfg = algo_classes(opts.algo)[1].from_dict(opts.overrides or {}).to_dict()
    return {
        "algo": opts.algo,
        "task": opts.task,
        "seed": opts.seed,
        "data": str(opts.data),
        "dataset_fingerprint": fingerprint(data),
        "obs_dim": data.obs_dim,
        "act_dim": data.act_dim,
        "obs_mean": data.observations.mean(axis=0).tolist(),
        "obs_std": data.observations.std(axis=0).tolist(),
        "dataset_attrs": _plain(data.attrs),
        "config": algo_cfg,
    }


def _plain(attrs: dict[str, Any]) -> dict[str, Any]:
    """Dataset attributes as plain YAML/JSON values (arrays -> lists), for config.yaml."""
    import json
    return json.loads(json.dumps(attrs, default=lambda x: x.tolist() if hasattr(x, "tolist") else str(x)))


def train(opts: TrainOptions) -> Path:
    """Train (or resume) a run; return its directory."""
    out = Path(opts.out)
    data = load_dataset(opts.data)
    resolved = _resolved_config(opts, data)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists():
        _check_resumable(out, resolved)
    else:
        (out / CONFIG).write_text(yaml.safe_dump(resolved, sort_keys=False))

    seed_everything(opts.seed)
    device = resolve_device(opts.device)
    learner = build_learner(opts.algo, resolved["config"], data.obs_dim, data.act_dim,
                            np.array(resolved["obs_mean"]), np.array(resolved["obs_std"])).to(device)
    cfg = learner.cfg
    batches = TensorBatches(data, device, opts.seed,
                            cost_scale=getattr(cfg, "cost_scale", 25.0),
                            timeout_is_terminal=getattr(cfg, "timeout_is_terminal", False))
    start, elapsed = 0, 0.0
    if ckpt_path.exists():
        start, elapsed = _load_checkpoint(ckpt_path, learner, batches)
        if start >= cfg.steps:
            print(f"{out}: already trained for {start} steps; nothing to do")
            return out

    writer = _tensorboard(out) if opts.tensorboard else None
    log_file = (out / "metrics.csv").open("a", newline="")
    # Fixed columns (phased schedules log different terms per phase): blanks where absent.
    csv_writer = csv.DictWriter(log_file, fieldnames=["step", "seconds", *learner.METRICS], restval="")
    if log_file.tell() == 0:
        csv_writer.writeheader()
    sums: dict[str, float] = defaultdict(float)
    count = 0
    steps = range(start, cfg.steps)
    if opts.progress:
        from tqdm import tqdm
        steps = tqdm(steps, initial=start, total=cfg.steps, desc=f"fit {opts.algo}", unit="step",
                     mininterval=2.0)
    t0 = time.perf_counter() - elapsed
    for step in steps:
        for k, v in learner.update(batches.sample(cfg.batch_size), step).items():
            sums[k] += v
        count += 1
        done = step + 1
        if done % opts.log_every == 0 or done == cfg.steps:
            row = {"step": done, "seconds": round(time.perf_counter() - t0, 2),
                   **{k: v / count for k, v in sums.items()}}
            csv_writer.writerow(row)
            log_file.flush()
            if writer is not None:
                for k, v in row.items():
                    if k != "step":
                        writer.add_scalar(k, v, done)
            sums.clear()
            count = 0
        if done % opts.checkpoint_every == 0 or done == cfg.steps:
            _save_checkpoint(ckpt_path, learner, batches, done, time.perf_counter() - t0)
    log_file.close()
    if writer is not None:
        writer.close()
    return out


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise RunError("--tensorboard needs the 'tensorboard' package: "
                       "pip install -c constraints.txt tensorboard") from exc
    return SummaryWriter(str(out / "tb"))


def _check_resumable(out: Path, resolved: dict[str, Any]) -> None:
    """Refuse to resume a different experiment; a larger `steps` (extending a run) is fine."""
    saved = yaml.safe_load((out / CONFIG).read_text())
    strip = lambda cfg: {k: v for k, v in (cfg or {}).items() if k != "steps"}  # noqa: E731
    for key in ("algo", "seed", "dataset_fingerprint", "config"):
        same = (strip(saved.get(key)) == strip(resolved[key])) if key == "config" else saved.get(key) == resolved[key]
        if not same:
            raise RunError(
                f"{out} holds a run with a different {key} ({saved.get(key)!r} vs {resolved[key]!r}); "
                "resuming it would mix two experiments — pass a new --out or delete the directory"
            )
    (out / CONFIG).write_text(yaml.safe_dump(resolved, sort_keys=False))


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


def _load_checkpoint(path: Path, learner: nn.Module, batches: TensorBatches) -> tuple[int, float]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    learner.load_state_dict(state["model"])
    learner.optimizer.load_state_dict(state["optimizer"])
    batches.load_state_dict(state["batches"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), float(state["elapsed"])


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained learner from its run directory (for evaluation and export)."""
    run = Path(run_dir)
    if not (run / CONFIG).is_file() or not (run / CHECKPOINT).is_file():
        raise RunError(
            f"{run} is not a trained run (needs {CONFIG} and {CHECKPOINT}); train one with "
            f"`python -m offline_train.fit --data data/boat.h5 --out {run}`"
        )
    meta = yaml.safe_load((run / CONFIG).read_text())
    learner = build_learner(meta["algo"], meta["config"], meta["obs_dim"], meta["act_dim"],
                            np.array(meta["obs_mean"]), np.array(meta["obs_std"]))
    state = torch.load(run / CHECKPOINT, map_location=device, weights_only=True)
    learner.load_state_dict(state["model"])
    meta["trained_steps"] = int(state["step"])
    meta["train_seconds"] = float(state["elapsed"])
    return learner.to(device).eval(), meta

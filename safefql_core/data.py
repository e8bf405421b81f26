"""Offline dataset: the HDF5 schema of ARCHITECTURE.md, its validation and batch sampling.

Keys are DSRL-compatible (a DSRL file loads as is) plus an optional continuous safety
margin `margins` (l > 0 unsafe). Without it the margin is derived from the 0/1 cost as
+cost_scale / -1 (SAFEFQL.md), so every learner sees one margin signal either way.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

# The dataset's public API: the schema, loading and saving, validation, batches.
__all__ = [
    "DEFAULT_COST_SCALE", "Dataset", "DatasetError", "OPTIONAL_KEYS", "REQUIRED_KEYS", "TensorBatches",
    "check_output", "fingerprint", "load_dataset", "save_dataset", "validate", "violation_free_episodes",
]

REQUIRED_KEYS = ("observations", "next_observations", "actions", "rewards", "costs",
                 "terminals", "timeouts")
OPTIONAL_KEYS = ("margins",)
DEFAULT_COST_SCALE = 25.0


class DatasetError(ValueError):
    """A dataset file that cannot be used; the message says what is wrong and how to fix it."""


@dataclass
class Dataset:
    observations: np.ndarray
    next_observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    costs: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    margins: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.observations)

    @property
    def obs_dim(self) -> int:
        return self.observations.shape[1]

    @property
    def act_dim(self) -> int:
        return self.actions.shape[1]

    def margin_signal(self, cost_scale: float = DEFAULT_COST_SCALE) -> np.ndarray:
        """The margin l(s) the safety critic learns from: stored, or derived from costs."""
        if self.margins is not None:
            return self.margins
        return np.where(self.costs > 0, cost_scale, -1.0).astype(np.float32)

    def episode_starts(self) -> np.ndarray:
        """Indices where an episode begins (after each terminal or time-out)."""
        ends = np.flatnonzero((self.terminals > 0) | (self.timeouts > 0))
        return np.concatenate([[0], ends[:-1] + 1]) if len(ends) else np.array([0])


def violation_free_episodes(data: Dataset) -> Dataset:
    """Only the whole episodes (split after each terminal or time-out) without a violation.

    The `bc-safe` baseline's data: cloning only what the behaviour policies did safely is
    the simplest way to use the cost signal without a critic. A trailing episode without an
    end flag counts as an episode. Raises DatasetError when no episode is violation-free.
    """
    ends = (data.terminals > 0) | (data.timeouts > 0)
    episode = np.concatenate([[0], np.cumsum(ends)[:-1]])  # episode index of every row
    violating = np.bincount(episode, weights=(data.costs > 0).astype(np.float64)) > 0
    keep = ~violating[episode]
    if not keep.any():
        raise DatasetError(
            f"none of the dataset's {len(violating)} episodes is free of violations, so the "
            "violation-free subset is empty; collect safer episodes or train on all data (--algo bc)"
        )
    arrays: dict[str, Any] = {k: None if getattr(data, k) is None else getattr(data, k)[keep]
              for k in REQUIRED_KEYS + OPTIONAL_KEYS}
    return Dataset(**arrays, attrs=dict(data.attrs))


def check_output(path: str | Path, directory: bool = False) -> Path:
    """Refuse an output path before the work that fills it: an existing directory where a file
    goes, or a place that cannot be written (probed by creating and removing a file there)."""
    path = Path(path)
    if not directory and path.is_dir():
        raise DatasetError(f"output {path} is a directory; give a file path, e.g. {path / 'data.h5'}")
    probe = path.parent / f".{path.name}.probe"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise DatasetError(f"cannot write output {path} ({exc.strerror or exc}); choose a writable location") from None
    return path


def save_dataset(path: str | Path, data: Dataset) -> None:
    """Write the file whole or not at all: a temporary beside it, renamed at the end, removed
    on any failure (DatasetError for an unwritable place)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(tmp, "w") as f:
            for key in REQUIRED_KEYS + OPTIONAL_KEYS:
                value = getattr(data, key)
                if value is not None:
                    f.create_dataset(key, data=value, compression="gzip", compression_opts=1)
            for key, value in data.attrs.items():
                f.attrs[key] = value if isinstance(value, (str, int, float)) else json.dumps(value)
        tmp.replace(path)  # never leave a half-written file under the final name
    except OSError as exc:
        raise DatasetError(f"cannot write {path} ({exc}); choose a writable location") from None
    finally:
        tmp.unlink(missing_ok=True)


def load_dataset(path: str | Path) -> Dataset:
    """Load and validate a dataset; raise DatasetError naming the problem and the fix."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"dataset file {path} does not exist; create one with "
            "`python -m offline_train.collect --task boat --out data/boat.h5`"
        )
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(
            f"{path} is not a readable HDF5 file ({exc}); it may be truncated or not a "
            "dataset — regenerate it with offline_train.collect"
        ) from exc
    with f:
        missing = [k for k in REQUIRED_KEYS if k not in f]
        if missing:
            raise DatasetError(
                f"{path} lacks required key(s) {missing}; a dataset needs {list(REQUIRED_KEYS)} "
                f"(DSRL layout) and may have 'margins'. Keys found: {sorted(f.keys())}"
            )
        try:
            arrays = {k: _read_array(f, k, path) for k in REQUIRED_KEYS + OPTIONAL_KEYS if k in f}
            attrs = {k: _decode_attr(v) for k, v in f.attrs.items()}
        except DatasetError:
            raise
        except (OSError, KeyError, TypeError, ValueError) as exc:  # a damaged chunk, an unreadable attribute
            raise DatasetError(f"{path} cannot be read ({exc}); it may be damaged — regenerate it") from None
    data = Dataset(**{k: _as_array(k, v) for k, v in arrays.items()}, attrs=attrs)
    validate(data, str(path))
    return data


def _decode_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value.item() if isinstance(value, np.generic) else value


def _read_array(f: h5py.File, key: str, path: Path) -> np.ndarray:
    """One key's array: an HDF5 dataset of at least one dimension, not a group or a scalar."""
    node = f[key]
    if not isinstance(node, h5py.Dataset):
        raise DatasetError(f"{path}: '{key}' is an HDF5 {type(node).__name__.lower()}, not an array; store it as a "
                           "dataset of shape [N] or [N, dim]")
    if node.ndim == 0:
        raise DatasetError(f"{path}: '{key}' is a scalar, not an array of shape [N] or [N, dim]")
    return node[()]


def _as_array(key: str, value: np.ndarray) -> np.ndarray:
    """float32, from real numbers only (flags may be bools): a complex value would lose its
    imaginary part silently, a string has no number in it."""
    kinds = "biuf" if key in ("terminals", "timeouts") else "iuf"
    if np.asarray(value).dtype.kind not in kinds:
        raise DatasetError(f"'{key}' has dtype {value.dtype}, not real numbers; store it as float32")
    return np.asarray(value, dtype=np.float32)


def validate(data: Dataset, name: str = "dataset") -> None:
    """Check shapes, sizes and finiteness; the error names the key, the rows and the fix."""
    n = len(data.observations)
    if n == 0:
        raise DatasetError(f"{name} is empty (0 transitions); collect or convert more data")
    for key in ("observations", "next_observations", "actions"):
        arr = getattr(data, key)
        if arr.ndim != 2:
            raise DatasetError(f"{name}: '{key}' must be 2-D [N, dim], got shape {arr.shape}")
    if data.next_observations.shape != data.observations.shape:
        raise DatasetError(
            f"{name}: next_observations {data.next_observations.shape} != observations "
            f"{data.observations.shape}"
        )
    for key in ("actions", "rewards", "costs", "terminals", "timeouts", "margins"):
        arr = getattr(data, key)
        if arr is not None and len(arr) != n:
            raise DatasetError(f"{name}: '{key}' has {len(arr)} rows, observations have {n}")
    for key in ("rewards", "costs", "terminals", "timeouts", "margins"):
        arr = getattr(data, key)
        if arr is not None and arr.ndim != 1:
            raise DatasetError(f"{name}: '{key}' must be 1-D [N], got shape {arr.shape}")
    for key in REQUIRED_KEYS + OPTIONAL_KEYS:
        arr = getattr(data, key)
        if arr is None:
            continue
        bad = ~np.isfinite(arr.reshape(n, -1)).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise DatasetError(
                f"{name}: '{key}' has {bad.sum()} non-finite row(s) (first: {rows[:5].tolist()}); "
                "drop or repair those transitions before training"
            )
    if np.abs(data.actions).max() > 1.0 + 1e-5:
        raise DatasetError(
            f"{name}: actions must be scaled to [-1, 1] (max |a| = {np.abs(data.actions).max():.3g}); "
            "rescale with the task's action bounds"
        )


def fingerprint(data: Dataset) -> str:
    """Content hash of the arrays: identifies the data a run was trained on."""
    h = hashlib.sha256()
    for key in REQUIRED_KEYS + OPTIONAL_KEYS:
        arr = getattr(data, key)
        if arr is not None:
            h.update(key.encode())
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def _window_lengths(data: Dataset, horizon: int) -> np.ndarray:
    """Per index, how many transitions an n-step window from it spans: up to `horizon`, cut at
    the end of its episode (a terminal or time-out; the data's end closes the last one)."""
    ends = np.flatnonzero((data.terminals > 0) | (data.timeouts > 0))
    ends = np.append(ends, len(data) - 1) if not len(ends) or ends[-1] != len(data) - 1 else ends
    idx = np.arange(len(data))
    to_end = ends[np.searchsorted(ends, idx)] - idx + 1
    return np.minimum(to_end, horizon).astype(np.int64)


class TensorBatches:
    """Uniform minibatches from a dataset held as tensors on the training device.

    With `horizon` n > 1 a batch also holds each sample's n-step window (`_window`), for the
    critics' n-step targets.

    Indices come from a seeded torch.Generator, so the batch sequence is a pure function
    of the seed (and survives checkpoint/resume through `state_dict`).
    """

    def __init__(self, data: Dataset, device: torch.device, seed: int,
                 cost_scale: float = DEFAULT_COST_SCALE, timeout_is_terminal: bool = False,
                 horizon: int = 1) -> None:
        self.device = device
        self.size = len(data)
        arrays = {
            "observations": data.observations,
            "next_observations": data.next_observations,
            "actions": data.actions,
            "rewards": data.rewards,
            "margins": data.margin_signal(cost_scale),
            # A time-out is not a terminal: by default the target bootstraps through it
            # (SAFEFQL.md); the reference code's treatment is kept behind the flag.
            "masks": 1.0 - np.maximum(data.terminals, data.timeouts if timeout_is_terminal else 0.0),
        }
        self.tensors = {k: torch.as_tensor(v, dtype=torch.float32, device=device) for k, v in arrays.items()}
        self.horizon = horizon
        if horizon > 1:  # one-step batches need no windows: no per-index pass over the data
            self.window = torch.as_tensor(_window_lengths(data, horizon), device=device)
            self.offsets = torch.arange(horizon, device=device)
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(self.size, (batch_size,), generator=self.generator).to(self.device)
        batch = {k: v[idx] for k, v in self.tensors.items()}
        if self.horizon > 1:
            batch.update(self._window(idx))
        return batch

    def _window(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The n-step window from each index, cut at its episode's end: per-step rewards and
        margins [B, n] with `valid` marking the steps inside the window, its length `steps`,
        and the last step's next observation and mask (what the n-step target bootstraps on)."""
        steps = self.window[idx]
        last = idx + steps - 1
        seq = torch.minimum(idx[:, None] + self.offsets, last[:, None])
        t = self.tensors
        return {"reward_seq": t["rewards"][seq], "margin_seq": t["margins"][seq],
                "valid": (self.offsets < steps[:, None]).float(), "steps": steps.float(),
                "next_observations": t["next_observations"][last], "masks": t["masks"][last]}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])

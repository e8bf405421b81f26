"""Shared fixtures: tiny datasets generated in the tests, never downloaded."""
from __future__ import annotations

import numpy as np
import pytest

from safefql_core.data import Dataset, save_dataset
from safefql_core.envs import boat_behaviour


@pytest.fixture(scope="session")
def tiny_boat_h5(tmp_path_factory) -> str:
    """A 12-episode (4,800-transition) boat dataset from the real behaviour mix."""
    arrays = boat_behaviour.collect(12, seed=3, progress=False)
    arrays.pop("family")
    path = tmp_path_factory.mktemp("data") / "tiny.h5"
    save_dataset(path, Dataset(**arrays, attrs={"task": "boat"}))
    return str(path)


def make_dataset(n: int = 20, obs_dim: int = 3, act_dim: int = 2, seed: int = 0, margins: bool = True) -> Dataset:
    rng = np.random.default_rng(seed)
    f = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    timeouts = np.zeros(n, np.float32)
    timeouts[n // 2 - 1] = timeouts[-1] = 1
    return Dataset(
        observations=f(n, obs_dim), next_observations=f(n, obs_dim),
        actions=np.clip(f(n, act_dim), -1, 1), rewards=f(n), costs=(rng.random(n) < 0.2).astype(np.float32),
        terminals=np.zeros(n, np.float32), timeouts=timeouts, margins=f(n) if margins else None,
    )

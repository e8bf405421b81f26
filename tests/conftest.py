"""Shared fixtures: tiny datasets generated in the tests, never downloaded."""
from __future__ import annotations

import os

import numpy as np
import pytest

from safefql_core.data import Dataset, save_dataset
from safefql_core.envs import boat_behaviour
from safefql_core.training import TrainOptions, train


@pytest.fixture(scope="session")
def tiny_boat_h5(tmp_path_factory) -> str:
    """A 12-episode (4,800-transition) boat dataset from the real behaviour mix."""
    arrays = boat_behaviour.collect(12, seed=4, progress=False)  # 4 of its episodes violate
    arrays.pop("family")
    path = tmp_path_factory.mktemp("data") / "tiny.h5"
    save_dataset(path, Dataset(**arrays, attrs={"task": "boat"}))
    return str(path)


@pytest.fixture(scope="module")
def ros():
    """rclpy on a private domain for a module of `ros` tests (the Makefile sets one; this covers
    a bare pytest run); subprocesses the tests start inherit the environment."""
    rclpy = pytest.importorskip("rclpy")
    os.environ.setdefault("ROS_DOMAIN_ID", str(os.getpid() % 100 + 1))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rclpy.init()
    yield
    rclpy.shutdown()


@pytest.fixture(scope="session")
def bundle(tiny_boat_h5, tmp_path_factory) -> str:
    """A real SafeFQL bundle (20 steps, tiny networks): what the node, launcher and replay
    tests load. Trained once per session."""
    from offline_train import export
    root = tmp_path_factory.mktemp("tiny_bundle")
    train(TrainOptions(data=tiny_boat_h5, out=str(root / "run"), algo="safefql",
                       overrides={"critic_hidden": [32, 32], "flow_hidden": [32, 32], "batch_size": 64,
                                  "flow_steps": 3, "steps": 20}, progress=False))
    assert export.main(["--run", str(root / "run"), "--out", str(root / "bundle")]) == 0
    return str(root / "bundle")


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

"""Shared fixtures: tiny datasets generated in the tests, never downloaded."""
from __future__ import annotations

import os

import numpy as np
import pytest

from safefql_core.data import Dataset


@pytest.fixture(scope="session")
def tiny_boat_bag(tmp_path_factory) -> str:
    """12 episodes (4,800 transitions) of the boat's real behaviour mix, recorded as a rosbag2
    on the boat's topics by `offline_train.collect --format bag`; 4 of the episodes violate."""
    from offline_train import collect
    path = tmp_path_factory.mktemp("data") / "tiny_bag"
    assert collect.main(["--episodes", "12", "--seed", "4", "--format", "bag", "--out", str(path),
                         "--no-progress"]) == 0
    return str(path)


@pytest.fixture(scope="session")
def tiny_boat_h5(tiny_boat_bag, tmp_path_factory) -> str:
    """`tiny_boat_bag` converted by `offline_train.convert`: the dataset, its attributes and the
    task spec they record all come from the pipeline a user runs."""
    from offline_train import convert
    path = tmp_path_factory.mktemp("data") / "tiny.h5"
    assert convert.main(["--bag", tiny_boat_bag, "--out", str(path), "--no-progress"]) == 0
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
    """A real SafeFQL bundle (20 steps, tiny networks) made by `fit` and `export` from the
    converted bag: what the node, launcher and replay tests load. Trained once per session."""
    from offline_train import export, fit
    root = tmp_path_factory.mktemp("tiny_bundle")
    assert fit.main(["--data", tiny_boat_h5, "--out", str(root / "run"), "--steps", "20", "--no-progress",
                     "--set", "critic_hidden=[32,32]", "flow_hidden=[32,32]", "batch_size=64", "flow_steps=3"]) == 0
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

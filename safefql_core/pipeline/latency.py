"""Timing the deployed decision: typical inputs for a bundle, and latencies of several
decision variants measured in interleaved rounds (a slice of calls each, round-robin), so
drift in machine load hits every variant alike. Used by `speed latency` and by the
benchmark's per-cell latency column.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from safefql_core.bundle import Bundle


def observations(bundle: Bundle, n: int, seed: int) -> np.ndarray:
    """Typical inputs: the task's evaluation states for the boat, else normalisation samples."""
    if bundle.meta["task"].get("name") == "boat":
        from safefql_core.envs import boat
        return boat.evaluation_states()[:n]
    norm = bundle.meta["observation_normalisation"]
    return np.random.default_rng(seed).normal(norm["mean"], norm["std"], (n, bundle.obs_dim))


def time_variants(variants: dict[str, Callable], obs: np.ndarray, calls: int, rounds: int,
                  warmup: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(latencies in µs, decision modes or None) per variant, interleaved in rounds."""
    per_round = max(1, calls // rounds)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    modes: dict[str, list[str]] = {name: [] for name in variants}
    for fn in variants.values():
        for i in range(warmup):
            fn(obs[i % len(obs)])
    for r in range(rounds):
        for name, fn in variants.items():
            out = samples[name]
            for i in range(per_round):
                x = obs[(r * per_round + i) % len(obs)]
                t = time.perf_counter_ns()
                decision = fn(x)
                out.append((time.perf_counter_ns() - t) / 1e3)
                modes[name].append(getattr(getattr(decision, "mode", None), "value", ""))
    return ({k: np.asarray(v) for k, v in samples.items()}, {k: np.asarray(v) for k, v in modes.items()})

"""Training throughput: milliseconds per update and where they go, for one learner and config.

What `python -m offline_train.speed train` reports. Updates run in chunks and the median
chunk is the result: on a machine shared with other jobs a load spike spoils a chunk, not
the number. Each chunk is timed twice: wall clock (what a user waits) and this process's CPU
time, which other jobs on a shared machine inflate far less (with one thread and no device,
the two agree on an idle machine). The phase split comes from torch's profiler over the regions the learners label
with `phase(...)` (PHASES); it is a share of the profiled time, because the profiler's own
overhead inflates every operation alike.
"""
from __future__ import annotations

import ctypes
import statistics
import time
from contextlib import AbstractContextManager
from typing import Callable

import torch
from torch import nn

from safefql_core.data import Dataset, TensorBatches

# The labelled regions of an update, in the order they run (critics.py, agent.py, fisor.py).
PHASES = ("critic_forward", "teacher_forward", "teacher_rollout", "actor_forward", "policy_forward",
          "backward", "optimizer", "target_update")


def phase(name: str) -> AbstractContextManager:
    """Label a region of the update for the profiler (a no-op cost of ~1 µs when not profiling)."""
    return torch.profiler.record_function(name)


# glibc's mallopt parameters (malloc.h) and the largest mmap threshold it accepts on 64-bit.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks up to 32 MiB for reuse instead of returning them
    to the kernel; False where the C library has no mallopt (not glibc: nothing to do).

    Why: an update allocates and frees the same activations hundreds of times, many above
    glibc's mmap threshold (128 KiB, raised only to the largest block freed so far: a block
    of exactly that size is still mmapped) or at the heap's top above its trim threshold.
    Each such block is mapped afresh and every page faults in again on its first write: in
    most processes (it depends on the allocation history) 100-400 page faults per update at
    the boat's sizes, 6 % of its CPU time on an Intel Xeon
    (docs/notebook/training-throughput.md). With both thresholds raised the memory is
    reused; the numbers computed do not change. The cost: a training process keeps up to
    256 MiB of freed memory mapped.
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    mapped = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
    return bool(mapped) and bool(mallopt(_M_TRIM_THRESHOLD, 8 * _MMAP_THRESHOLD_MAX))


def batch_source(learner: nn.Module, data: Dataset, device: torch.device, seed: int) -> TensorBatches:
    """Minibatches shaped as the learner trains on them (n-step windows where it uses them)."""
    cfg = learner.cfg
    return TensorBatches(data, device, seed, cost_scale=getattr(cfg, "cost_scale", 25.0),
                         timeout_is_terminal=getattr(cfg, "timeout_is_terminal", False),
                         horizon=getattr(cfg, "n_step", 1))


def time_chunks(update: Callable[[int], object], chunks: int, per_chunk: int, warmup: int,
                sync: Callable[[], None]) -> tuple[list[float], list[float]]:
    """(wall, CPU) ms per update of each chunk, after `warmup` untimed updates; `sync` waits
    for the device."""
    step = 0
    for _ in range(warmup):
        update(step)
        step += 1
    sync()
    wall, cpu = [], []
    for _ in range(chunks):
        t, c = time.perf_counter(), time.process_time()
        for _ in range(per_chunk):
            update(step)
            step += 1
        sync()
        wall.append((time.perf_counter() - t) * 1e3 / per_chunk)
        cpu.append((time.process_time() - c) * 1e3 / per_chunk)
    return wall, cpu


def phase_split(update: Callable[[int], object], steps: int) -> dict[str, float]:
    """Share of the profiled update time in each labelled phase (PHASES), and the rest."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter_ns()
        for step in range(steps):
            update(step)
        total_us = (time.perf_counter_ns() - t) / 1e3
    spent = {e.key: e.cpu_time_total for e in prof.key_averages() if e.key in PHASES}
    shares = {name: round(spent[name] / total_us, 4) for name in PHASES if name in spent}
    shares["other"] = round(max(0.0, 1.0 - sum(shares.values())), 4)
    return shares


def measure(learner: nn.Module, batches: TensorBatches, chunks: int, per_chunk: int, warmup: int,
            profile_steps: int, update: Callable[[dict, int], object] | None = None) -> dict:
    """ms per update (median chunk, spread) and the phase split, for `learner` on `batches`.

    `update(batch, step)` defaults to the learner's own; the CUDA-graph path passes its
    replay. Batches are drawn outside the timed update as the training loop draws them, so
    the numbers include the sampling of the minibatch.
    """
    step_fn = update or learner.update
    size = learner.cfg.batch_size
    device = next(learner.parameters()).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def one(step: int) -> object:
        return step_fn(batches.sample(size), step)

    ms, cpu_ms = time_chunks(one, chunks, per_chunk, warmup, sync)
    median = statistics.median(ms)
    result = {"ms_per_update": round(median, 3), "steps_per_s": round(1e3 / median, 1),
              "cpu_ms_per_update": round(statistics.median(cpu_ms), 3),
              "chunk_ms": [round(x, 3) for x in ms],
              "chunk_spread": round((max(ms) - min(ms)) / median, 3)}
    if profile_steps:
        result["phases"] = phase_split(one, profile_steps)
    return result

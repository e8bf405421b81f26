"""A learner's update replayed as a CUDA graph: one launch instead of ~3,000 small kernels.

At the boat's sizes an update is thousands of tiny operations, and on a GPU each costs a
kernel launch of a few microseconds, far more than its arithmetic: the update is
launch-bound. Captured once as a CUDA graph, it replays with one launch (the pattern of
torch.cuda.graphs' "whole network capture"): the batch is copied into static input tensors,
the graph runs forward, backward, Adam (capturable, so its step counter lives on the device)
and the EMA target, and the metrics land in static output tensors.

The update's Python control flow is fixed at capture: a learner whose active loss terms
change with the step (SafeFQL's phased schedule) gets one graph per set of terms
(`graph_key`). Warm-up updates before a capture run on a side stream, as capture requires,
and are undone (parameters and optimizer state restored), so the graphed run trains from
the same initial weights as an eager one. Random draws inside the graph (noise, flow times)
come from the CUDA generator, advanced at each replay; a GPU run is not bitwise equal to a
CPU run with the same seed (neither is an eager GPU run).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

WARMUP = 3  # eager updates on a side stream before capture (cuBLAS handles, lazy optimizer state)


class GraphedUpdate:
    """Callable like `learner.update(batch, step)`, replaying a CUDA graph per `graph_key(step)`.

    The returned metric tensors are the graph's static outputs: valid until the next call
    (the training loop adds them to its sums at once)."""

    def __init__(self, learner: nn.Module) -> None:
        device = next(learner.parameters()).device
        if device.type != "cuda":
            raise ValueError(f"a CUDA graph needs the learner on a CUDA device, not {device}; "
                             "use --device cuda, or train without --cuda-graph")
        self.learner = learner
        for group in learner.optimizer.param_groups:
            group["capturable"] = True
        self.graph_key: Callable[[int], object] = getattr(learner, "active_terms", lambda step: None)
        self.graphs: dict[object, tuple[dict[str, torch.Tensor], torch.cuda.CUDAGraph, dict[str, torch.Tensor]]] = {}

    def __call__(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        key = self.graph_key(step)
        if key not in self.graphs:
            self.graphs[key] = self._capture(batch, step)
        inputs, graph, outputs = self.graphs[key]
        for name, value in batch.items():
            inputs[name].copy_(value)
        graph.replay()
        return outputs

    def _capture(self, batch: dict[str, torch.Tensor], step: int):
        learner = self.learner
        inputs = {name: value.clone() for name, value in batch.items()}
        saved = _snapshot(learner)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP):
                learner.update(inputs, step)
        torch.cuda.current_stream().wait_stream(side)
        _restore(learner, saved)
        graph = torch.cuda.CUDAGraph()
        learner.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            outputs = learner.update(inputs, step)
        return inputs, graph, outputs


def _snapshot(learner: nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
    """Copies of the learner's state and its optimizer's per-parameter state."""
    opt_state = {p: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)}
                 for p, s in learner.optimizer.state.items()}
    return {k: v.clone() for k, v in learner.state_dict().items()}, opt_state


def _restore(learner: nn.Module, saved: tuple[dict[str, torch.Tensor], dict]) -> None:
    """Back to the snapshot in place (capture records these very tensors' addresses); state
    the warm-up created from nothing (Adam's moments and step) goes back to zero."""
    weights, opt_state = saved
    with torch.no_grad():
        for k, v in learner.state_dict().items():
            v.copy_(weights[k])
        for p, state in learner.optimizer.state.items():
            for k, v in state.items():
                if torch.is_tensor(v) and p in opt_state:
                    v.copy_(opt_state[p][k])
                elif torch.is_tensor(v):
                    v.zero_()

"""Inference forms of the trained networks: the same functions in fewer ONNX graph nodes.

At batch 1 onnxruntime spends ~3 µs per call plus ~0.4 µs per graph node, more than the
arithmetic of these small MLPs (docs/notebook/latency.md, session 3), so the exported
graphs are built from a folded copy of the learner:

- the observation normalisation is folded into the first layer (W' = W / std,
  b' = b - W mean / std): no Sub and Div nodes. Only when it is well conditioned, i.e.
  every |mean| / std <= MAX_FOLD_CONDITION: an input that sits far from zero relative to its
  spread (an accelerometer's gravity axis: mean 9.8, std 0.03) makes x W' and b' large terms
  that cancel, and float32 then loses ~|mean| / std x 6e-8 of the result per input. Such a
  normalisation stays a separate (x - mean) / std in the graph;
- an ensemble becomes one dense MLP, the members' first layers side by side and the deeper
  layers block-diagonal, so each layer is one Gemm with its ReLU fused (instead of MatMul,
  Add and Relu on a member axis) and the members' outputs are columns to take the max over.

`fold(learner)` returns a module with the learner's attribute names and call signatures, so
the bundle's graph classes export it unchanged; export checks it against the original
learner on the stored examples (bundle.check_parity). Networks with layer norm have no
dense form and are exported as trained.
"""
from __future__ import annotations

from typing import cast

import torch
from torch import nn

from safefql_core.nets import ACTIVATIONS, MLP, EnsembleLinear, Normalizer

Layer = tuple[torch.Tensor, torch.Tensor]  # weight [members, in, out], bias [members, out]
Parsed = tuple[list[Layer], str]  # an MLP's layers and its activation's name
MAX_FOLD_CONDITION = 10.0  # largest |mean| / std whose normalisation is folded (module doc)


def mlp_layers(mlp: MLP) -> Parsed | None:
    """The MLP's affine layers with a member axis, and its activation; None with layer norm (or
    without an activation, which configs rule out: every hidden list is non-empty)."""
    layers: list[Layer] = []
    activation: str | None = None
    for module in mlp.net:
        if isinstance(module, EnsembleLinear):
            layers.append((module.weight.detach(), module.bias.detach()[:, 0]))
        elif isinstance(module, nn.Linear):
            layers.append((module.weight.detach().T[None], module.bias.detach()[None]))
        elif type(module) in ACTIVATIONS.values():
            activation = next(k for k, v in ACTIVATIONS.items() if type(module) is v)
        else:
            return None
    return None if activation is None else (layers, activation)


def fold_normalisation(layers: list[Layer], mean: torch.Tensor, std: torch.Tensor) -> list[Layer]:
    """Move (x - mean) / std of the first len(mean) inputs into the first layer."""
    (w, b), rest = layers[0], layers[1:]
    d = len(mean)
    w_obs = w[:, :d, :] / std[None, :, None]
    b = b - torch.einsum("i,mio->mo", mean, w_obs)
    return [(torch.cat([w_obs, w[:, d:, :]], dim=1), b), *rest]


def side_by_side(layers: list[Layer]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Members -> one dense net: first layer concatenated, deeper layers block-diagonal."""
    dense = []
    for i, (w, b) in enumerate(layers):
        members = list(w)
        dense.append((torch.cat(members, dim=1) if i == 0 else torch.block_diag(*members), b.reshape(-1)))
    return dense


class DenseMLP(nn.Module):
    """Plain Linear layers with one activation between them; `forward` concatenates its inputs
    like MLP does, and squeezes a single output column where the folded net did (Value)."""

    def __init__(self, layers: list[tuple[torch.Tensor, torch.Tensor]], activation: str,
                 squeeze: bool = False) -> None:
        super().__init__()
        self.linears = nn.ModuleList()
        for w, b in layers:
            linear = nn.Linear(w.shape[0], w.shape[1])
            with torch.no_grad():
                linear.weight.copy_(w.T)
                linear.bias.copy_(b)
            self.linears.append(linear)
        self.activation = ACTIVATIONS[activation]()
        self.squeeze = squeeze

    def dense(self, *inputs: torch.Tensor) -> torch.Tensor:
        x = torch.cat(inputs, dim=-1) if len(inputs) > 1 else inputs[0]
        for linear in self.linears[:-1]:
            x = self.activation(linear(x))
        return self.linears[-1](x)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self.dense(*inputs)
        return out.squeeze(-1) if self.squeeze else out


class DenseCritic(DenseMLP):
    """A folded Critic ensemble: forward -> [members, batch] like Critic; `pessimistic` and
    `conservative` take the max / min over members straight from the dense columns (no
    transpose node)."""

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.dense(obs, act).T  # a critic takes exactly (obs, act), narrower than DenseMLP

    def pessimistic(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.dense(obs, act).amax(dim=-1)

    def conservative(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.dense(obs, act).amin(dim=-1)


CRITICS = ("q", "qc")  # ensembles: folded to DenseCritic
VALUES = ("v", "vc")   # one output, squeezed like Value


class Folded(nn.Module):
    """The learner's deployable networks in dense form, under the learner's attribute names."""

    def __init__(self, learner: nn.Module, parsed: dict[str, Parsed]) -> None:
        super().__init__()
        normalizer = cast(Normalizer, learner.normalizer)
        mean, std = normalizer.mean, normalizer.std
        folds = bool((mean.abs() / std).max() <= MAX_FOLD_CONDITION)
        # folded into every first layer, or kept as the learner's own (x - mean) / std
        self.normalizer = nn.Identity() if folds else learner.normalizer
        for name, (layers, activation) in parsed.items():
            dense = side_by_side(fold_normalisation(layers, mean, std) if folds else layers)
            net = DenseCritic(dense, activation) if name in CRITICS else \
                DenseMLP(dense, activation, squeeze=name in VALUES)
            setattr(self, name, net)


def fold(learner: nn.Module, names: tuple[str, ...]) -> nn.Module:
    """The folded form of the networks `names` (e.g. ("actor", "qc", "vc")), or the learner
    itself when one of them has no dense form (layer norm)."""
    parsed = {n: mlp_layers(getattr(learner, n).mlp) for n in names}
    dense = {n: p for n, p in parsed.items() if p is not None}
    if len(dense) < len(parsed):
        return learner
    return Folded(learner, dense).eval()

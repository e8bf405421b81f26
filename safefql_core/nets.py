"""MLPs and vectorised ensembles.

An ensemble is one module whose linear layers carry a leading member axis and run as a
single batched matmul (bias added inside it: baddbmm): on a 2-core CPU that is ~2x faster
than a ModuleList of critics, and it exports to ONNX as one graph.

Networks that are trained side by side share one ensemble: the learners stack the reward
and safety critics as one ensemble in `groups` of members (each group keeps its own layer
norm parameters, as separate critics would), so each layer of both is one operation.
`members_view` gives a group back as a network of its own, for export and inference.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class EnsembleLinear(nn.Module):
    def __init__(self, members: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # torch.nn.Linear's default init, per member
        self.weight = nn.Parameter(torch.empty(members, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """[B, in] (shared by the members) or [members, B, in] -> [members, B, out].

        frozen: through detached weights, so gradients reach the input only.
        """
        w, b = (self.weight.detach(), self.bias.detach()) if frozen else (self.weight, self.bias)
        # A shared input is expanded (a view): baddbmm adds the bias inside the matmul, one
        # operation instead of two, forward and backward.
        return torch.baddbmm(b, x.expand(w.shape[0], *x.shape) if x.dim() == 2 else x, w)


class EnsembleLayerNorm(nn.Module):
    """Layer norm over the features with affine parameters per group of members [groups, 1, 1, dim]:
    a group is one of the networks stacked in an ensemble, with layer norm's parameters shared
    by its members as nn.LayerNorm shares them over a plain ensemble's member axis."""

    def __init__(self, groups: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(groups, 1, 1, dim))
        self.bias = nn.Parameter(torch.zeros(groups, 1, 1, dim))

    def forward(self, x: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        w, b = (self.weight.detach(), self.bias.detach()) if frozen else (self.weight, self.bias)
        y = torch.nn.functional.layer_norm(x, x.shape[-1:])
        return (y.view(w.shape[0], -1, *y.shape[1:]) * w + b).view(y.shape)


class MLP(nn.Module):
    """Plain MLP; with `members > 1` an ensemble returning [members, batch, out_dim], its members
    in `groups` of equal size (module doc)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int],
                 activation: str = "relu", members: int = 1, layer_norm: bool = False,
                 groups: int = 1) -> None:
        super().__init__()
        if members % groups:
            raise ValueError(f"{members} members do not split into {groups} equal groups")
        self.members, self.groups = members, groups
        self.spec = (in_dim, out_dim, list(hidden), activation, layer_norm)  # for members_view
        linear = (lambda a, b: EnsembleLinear(members, a, b)) if members > 1 else nn.Linear
        dims = [in_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers.append(linear(a, b))
            if layer_norm:
                layers.append(EnsembleLayerNorm(groups, b) if groups > 1 else nn.LayerNorm(b))
            layers.append(ACTIVATIONS[activation]())
        layers.append(linear(dims[-1], out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, *inputs: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """frozen (ensembles): through detached weights, gradients reach the inputs only."""
        x = torch.cat(inputs, dim=-1) if len(inputs) > 1 else inputs[0]
        if not frozen:
            return self.net(x)
        for layer in self.net:
            if isinstance(layer, (nn.Linear, nn.LayerNorm)):
                raise ValueError("frozen evaluation is for ensembles (members > 1)")
            x = layer(x, frozen=True) if isinstance(layer, (EnsembleLinear, EnsembleLayerNorm)) else layer(x)
        return x


def members_view(mlp: MLP, start: int, stop: int) -> MLP:
    """The members [start, stop) of an ensemble (inside one group) as an MLP of their own whose
    parameters share the ensemble's storage: it follows training and load_state_dict in place,
    but not a move to another device (take views after `.to`). For inference and export: its
    parameters do not require grad, so it trains nothing."""
    in_dim, out_dim, hidden, activation, layer_norm = mlp.spec
    group = start // (mlp.members // mlp.groups)
    if (stop - 1) // (mlp.members // mlp.groups) != group:
        raise ValueError(f"members [{start}, {stop}) span two groups of the ensemble")
    view = MLP(in_dim, out_dim, hidden, activation, stop - start, layer_norm)
    for src, dst in zip(mlp.net, view.net):
        if isinstance(dst, EnsembleLinear):
            weight, bias = src.weight[start:stop], src.bias[start:stop]
        elif isinstance(dst, nn.Linear):
            weight, bias = src.weight[start].T, src.bias[start, 0]
        elif isinstance(dst, nn.LayerNorm):
            weight, bias = ((src.weight[group, 0, 0], src.bias[group, 0, 0]) if mlp.groups > 1
                            else (src.weight, src.bias))
        else:
            continue
        dst.weight, dst.bias = nn.Parameter(weight, requires_grad=False), nn.Parameter(bias, requires_grad=False)
    return view


class Critic(nn.Module):
    """Q(s, a) ensemble -> [members, batch], from an ensemble MLP over (s, a) with one output."""

    def __init__(self, mlp: MLP) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, obs: torch.Tensor, act: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        return self.mlp(obs, act, frozen=frozen).squeeze(-1)

    def members_view(self, start: int, stop: int) -> Critic:
        """Members [start, stop) as a Critic of their own (nets.members_view)."""
        return Critic(members_view(self.mlp, start, stop))

    def pessimistic(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """max over members -> [batch]: the safety critic's pessimistic value."""
        return self.forward(obs, act).max(dim=0).values

    def conservative(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """min over members -> [batch]: the reward critic's conservative value (IQL's)."""
        return self.forward(obs, act).min(dim=0).values


class Value(nn.Module):
    """V(s) -> [batch] from an MLP over s with one output; an ensemble's -> [members, batch]."""

    def __init__(self, mlp: MLP) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mlp(obs).squeeze(-1)

    def member_view(self, index: int) -> Value:
        """One member as a Value of its own (nets.members_view)."""
        return Value(members_view(self.mlp, index, index + 1))


class FlowField(nn.Module):
    """Velocity field v(s, x_t, t) of the flow-matching behaviour policy (the teacher)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.mlp = MLP(obs_dim + act_dim + 1, act_dim, hidden, "gelu")

    def forward(self, obs: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(obs, x, t)


class OneStepPolicy(nn.Module):
    """mu(s, z): maps a noise sample straight to an action (the student / actor)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.mlp = MLP(obs_dim + act_dim, act_dim, hidden, "gelu")

    def forward(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.mlp(obs, z)


class Normalizer(nn.Module):
    """Fixed observation normalisation (dataset mean / std), stored with the weights."""

    mean: torch.Tensor  # buffers (register_buffer), typed for the checker
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float().clamp_min(1e-6))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.mean) / self.std

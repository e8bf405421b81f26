"""Behaviour cloning baseline: a deterministic MLP regressing the logged actions (MSE).

It sees the same data and the same normalisation as SafeFQL, so the gap between the two
is what the critics and the feasibility gate buy.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from safefql_core.config import ConfigMixin
from safefql_core.nets import MLP, Normalizer
from safefql_core.throughput import phase


@dataclass
class BCConfig(ConfigMixin):
    steps: int = 20_000
    batch_size: int = 256
    lr: float = 3e-4
    hidden: list[int] = field(default_factory=lambda: [256, 256, 256])



class BC(nn.Module):
    METRICS = ("loss_bc",)

    def __init__(self, obs_dim: int, act_dim: int, cfg: BCConfig,
                 obs_mean: torch.Tensor, obs_std: torch.Tensor) -> None:
        super().__init__()
        self.cfg, self.obs_dim, self.act_dim = cfg, obs_dim, act_dim
        self.normalizer = Normalizer(obs_mean, obs_std)
        self.policy = MLP(obs_dim, act_dim, cfg.hidden, "relu")
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr, fused=True)

    def update(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """One step; the loss comes back as a tensor, read when the training loop logs."""
        with phase("policy_forward"):
            pred = torch.tanh(self.policy(self.normalizer(batch["observations"])))
            loss = (pred - batch["actions"]).pow(2).sum(dim=-1).mean()
        with phase("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with phase("optimizer"):
            self.optimizer.step()
        return {"loss_bc": loss.detach()}

    @torch.no_grad()
    def act(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return torch.tanh(self.policy(self.normalizer(obs)))

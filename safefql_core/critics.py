"""The critics every safe offline learner here shares: IQL reward critic + HJ safety critic.

SafeFQL and the FISOR-style baseline differ only in their policies; training both on the
same critic code is what makes the comparison (and the latency benchmark) fair.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from safefql_core import losses
from safefql_core.config import ConfigMixin
from safefql_core.nets import Critic, Normalizer, Value


@dataclass
class CriticConfig(ConfigMixin):
    """Critic hyperparameters; defaults are the boat task's (docs/DESIGN.md)."""

    steps: int = 20_000
    batch_size: int = 256
    lr: float = 3e-4
    gamma: float = 0.99
    safety_gamma: float | None = 0.999  # None: same as gamma (paper); docs/DESIGN.md
    expectile: float = 0.9            # reward V: upper expectile of Q
    safety_expectile: float = 0.9     # mirrored -> V_c at the level-0.1 expectile (paper, reference)
    ema: float = 0.02                 # reference 0.005; docs/DESIGN.md
    critic_hidden: list[int] = field(default_factory=lambda: [128, 128])
    critic_members: int = 2
    critic_layer_norm: bool = False
    safety_backup: str = "reference"  # or "paper"
    timeout_is_terminal: bool = False # reference code: True
    cost_scale: float = 25.0          # margin from 0/1 costs when no margins are stored
    n_step: int = 10                  # paper/reference: 1 (one-step targets); docs/DESIGN.md

    def check(self) -> None:
        if self.safety_backup not in ("reference", "paper"):
            raise ValueError(f"safety_backup must be 'reference' or 'paper', got '{self.safety_backup}'")
        if self.n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {self.n_step}")


def soft_update(target: nn.Module, source: nn.Module, rate: float) -> None:
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.lerp_(s, rate)


def frozen(module: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    """Evaluate a critic with detached weights: gradients reach the inputs only."""
    params = {k: v.detach() for k, v in module.named_parameters()}
    return functional_call(module, params, inputs)


class OfflineCritics(nn.Module):
    """Reward Q ensemble + V (IQL), safety Q_c ensemble + V_c (HJ max-backup), EMA targets."""

    CRITIC_METRICS = ("loss_v", "loss_q", "loss_vc", "loss_qc")

    def __init__(self, obs_dim: int, act_dim: int, cfg: CriticConfig,
                 obs_mean: torch.Tensor, obs_std: torch.Tensor) -> None:
        super().__init__()
        self.cfg, self.obs_dim, self.act_dim = cfg, obs_dim, act_dim
        self.normalizer = Normalizer(obs_mean, obs_std)
        members, hidden, ln = cfg.critic_members, cfg.critic_hidden, cfg.critic_layer_norm
        self.q = Critic(obs_dim, act_dim, hidden, members, ln)
        self.v = Value(obs_dim, hidden, ln)
        self.qc = Critic(obs_dim, act_dim, hidden, members, ln)
        self.vc = Value(obs_dim, hidden, ln)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.qc_target = copy.deepcopy(self.qc).requires_grad_(False)

    def make_optimizer(self) -> None:
        """One Adam over every trainable parameter (call once the subclass built its nets)."""
        self.optimizer = torch.optim.Adam([p for p in self.parameters() if p.requires_grad],
                                          lr=self.cfg.lr)

    def critic_losses(self, b: dict[str, torch.Tensor], obs: torch.Tensor,
                      next_obs: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        with torch.no_grad():
            q_bar = self.q_target(obs, b["actions"])
            qc_bar = self.qc_target(obs, b["actions"])
            next_v, next_vc, gamma_c = self.v(next_obs), self.vc(next_obs), cfg.safety_gamma or cfg.gamma
            if "valid" in b:  # n-step windows (TensorBatches with horizon > 1)
                y = losses.n_step_reward_target(b["reward_seq"], b["valid"], b["steps"], b["masks"],
                                                next_v, cfg.gamma)
                yc = losses.n_step_safety_target(b["margin_seq"], b["valid"], b["steps"], b["masks"],
                                                 next_vc, gamma_c, cfg.safety_backup)
            else:
                y = losses.reward_q_target(b["rewards"], b["masks"], next_v, cfg.gamma)
                yc = losses.safety_q_target(b["margins"], b["masks"], next_vc, gamma_c, cfg.safety_backup)
        return {
            "loss_v": losses.reward_value_loss(q_bar, self.v(obs), cfg.expectile),
            "loss_q": losses.ensemble_mse(self.q(obs, b["actions"]), y),
            "loss_vc": losses.safety_value_loss(qc_bar, self.vc(obs), cfg.safety_expectile),
            "loss_qc": losses.ensemble_mse(self.qc(obs, b["actions"]), yc),
        }

    def step(self, terms: dict[str, torch.Tensor], update_targets: bool) -> dict[str, float]:
        """Sum the `loss_*` terms, take one optimizer step, move the EMA targets."""
        total = sum(v for k, v in terms.items() if k.startswith("loss_") and k != "loss_distill")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        if update_targets:
            soft_update(self.q_target, self.q, self.cfg.ema)
            soft_update(self.qc_target, self.qc, self.cfg.ema)
        return {k: float(v.detach()) for k, v in terms.items()}

    @torch.no_grad()
    def safety(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pessimistic Q_safe = max over the ensemble, V_safe) at raw observations."""
        o = self.normalizer(obs)
        return self.qc.pessimistic(o, action), self.vc(o)

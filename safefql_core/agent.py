"""The SafeFQL agent: networks, one update step, and act().

Like FQL, all losses are summed and taken in one optimizer step per batch; the actor's
view of the critics goes through detached parameters, so the gated actor loss moves only
the actor while the critics learn from their own targets in the same step. The phased
schedule (paper text) switches the loss terms on per phase; the joint one (reference code,
default) trains everything from step 0.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from safefql_core import losses
from safefql_core.config import ConfigMixin
from safefql_core.nets import Critic, FlowField, Normalizer, OneStepPolicy, Value


@dataclass
class SafeFQLConfig(ConfigMixin):
    """Hyperparameters. Defaults are the boat task's, sized for a 2-core CPU (docs/DESIGN.md)."""

    steps: int = 20_000
    batch_size: int = 256
    lr: float = 3e-4
    gamma: float = 0.99
    safety_gamma: float | None = 0.999  # None: same as gamma (paper); docs/DESIGN.md
    expectile: float = 0.9            # reward V: upper expectile of Q
    safety_expectile: float = 0.9     # safety V_c: mirrored -> effective level 0.1
    ema: float = 0.02                 # reference 0.005; docs/DESIGN.md
    critic_hidden: list[int] = field(default_factory=lambda: [128, 128])
    critic_members: int = 2
    critic_layer_norm: bool = False
    flow_hidden: list[int] = field(default_factory=lambda: [128, 128, 128])
    flow_steps: int = 10              # Euler steps of the teacher
    alpha: float = 100.0              # distillation weight (boat; reference range 0.01-100)
    safety_weight: float = 1e5        # w_s
    normalize_q: bool = True
    normalized_branches: bool = False
    gate_threshold: float = -0.05     # paper: 0; docs/DESIGN.md
    safety_backup: str = "reference"  # or "paper"
    timeout_is_terminal: bool = False # reference code: True
    schedule: str = "joint"           # or "phased"
    phases: list[float] = field(default_factory=lambda: [0.4, 0.6])  # critic end, teacher end
    cost_scale: float = 25.0          # margin from 0/1 costs when no margins are stored

    def check(self) -> None:
        if self.schedule not in ("joint", "phased"):
            raise ValueError(f"schedule must be 'joint' or 'phased', got '{self.schedule}'")
        if self.safety_backup not in ("reference", "paper"):
            raise ValueError(f"safety_backup must be 'reference' or 'paper', got '{self.safety_backup}'")



def euler_sample(field_net: FlowField, obs: torch.Tensor, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """Integrate the flow from noise (t=0) to an action (t=1) with fixed Euler steps."""
    x = noise
    for i in range(steps):
        t = torch.full((obs.shape[0], 1), i / steps, device=obs.device)
        x = x + field_net(obs, x, t) / steps
    return x.clamp(-1.0, 1.0)


def soft_update(target: nn.Module, source: nn.Module, rate: float) -> None:
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters()):
            t.lerp_(s, rate)


class SafeFQL(nn.Module):
    METRICS = ("loss_v", "loss_q", "loss_vc", "loss_qc", "loss_flow", "loss_actor", "loss_distill",
               "feasible_frac", "actor_qr", "actor_qc")

    def __init__(self, obs_dim: int, act_dim: int, cfg: SafeFQLConfig,
                 obs_mean: torch.Tensor, obs_std: torch.Tensor) -> None:
        super().__init__()
        self.cfg, self.obs_dim, self.act_dim = cfg, obs_dim, act_dim
        self.normalizer = Normalizer(obs_mean, obs_std)
        self.q = Critic(obs_dim, act_dim, cfg.critic_hidden, cfg.critic_members, cfg.critic_layer_norm)
        self.v = Value(obs_dim, cfg.critic_hidden, cfg.critic_layer_norm)
        self.qc = Critic(obs_dim, act_dim, cfg.critic_hidden, cfg.critic_members, cfg.critic_layer_norm)
        self.vc = Value(obs_dim, cfg.critic_hidden, cfg.critic_layer_norm)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.qc_target = copy.deepcopy(self.qc).requires_grad_(False)
        self.teacher = FlowField(obs_dim, act_dim, cfg.flow_hidden)
        self.actor = OneStepPolicy(obs_dim, act_dim, cfg.flow_hidden)
        trainable = [p for n, p in self.named_parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trainable, lr=cfg.lr)

    # ---- losses -------------------------------------------------------------------------
    def critic_losses(self, b: dict[str, torch.Tensor], obs: torch.Tensor,
                      next_obs: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        with torch.no_grad():
            q_bar = self.q_target(obs, b["actions"])
            qc_bar = self.qc_target(obs, b["actions"])
            y = losses.reward_q_target(b["rewards"], b["masks"], self.v(next_obs), cfg.gamma)
            yc = losses.safety_q_target(b["margins"], b["masks"], self.vc(next_obs),
                                        cfg.safety_gamma or cfg.gamma, cfg.safety_backup)
        return {
            "loss_v": losses.reward_value_loss(q_bar, self.v(obs), cfg.expectile),
            "loss_q": losses.ensemble_mse(self.q(obs, b["actions"]), y),
            "loss_vc": losses.safety_value_loss(qc_bar, self.vc(obs), cfg.safety_expectile),
            "loss_qc": losses.ensemble_mse(self.qc(obs, b["actions"]), yc),
        }

    def teacher_loss(self, b: dict[str, torch.Tensor], obs: torch.Tensor) -> dict[str, torch.Tensor]:
        noise = torch.randn_like(b["actions"])
        t = torch.rand(obs.shape[0], 1, device=obs.device)
        x_t = (1 - t) * noise + t * b["actions"]
        return {"loss_flow": losses.flow_matching_loss(self.teacher(obs, x_t, t), noise, b["actions"])}

    def actor_loss(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        noise = torch.randn(obs.shape[0], self.act_dim, device=obs.device)
        with torch.no_grad():
            target = euler_sample(self.teacher, obs, noise, cfg.flow_steps)
        mu = self.actor(obs, noise)
        distill = losses.distillation_loss(mu, target)
        action = mu.clamp(-1.0, 1.0)
        qr = self._frozen(self.q, obs, action)
        qc = self._frozen(self.qc, obs, action)
        loss, info = losses.gated_actor_loss(
            qr, qc, distill, cfg.alpha, cfg.safety_weight, cfg.normalize_q,
            cfg.normalized_branches, cfg.gate_threshold)
        return {"loss_actor": loss, "loss_distill": distill, **info}

    @staticmethod
    def _frozen(module: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
        """Evaluate a critic with detached weights: gradients reach the inputs only."""
        params = {k: v.detach() for k, v in module.named_parameters()}
        return functional_call(module, params, inputs)

    # ---- training -----------------------------------------------------------------------
    def active_terms(self, step: int) -> tuple[bool, bool, bool]:
        """(critics, teacher, actor) switched on at this step."""
        if self.cfg.schedule == "joint":
            return True, True, True
        critic_end, teacher_end = (int(f * self.cfg.steps) for f in self.cfg.phases)
        return step < critic_end, critic_end <= step < teacher_end, step >= teacher_end

    def update(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        obs = self.normalizer(batch["observations"])
        next_obs = self.normalizer(batch["next_observations"])
        critics, teacher, actor = self.active_terms(step)
        terms: dict[str, torch.Tensor] = {}
        if critics:
            terms.update(self.critic_losses(batch, obs, next_obs))
        if teacher:
            terms.update(self.teacher_loss(batch, obs))
        if actor:
            terms.update(self.actor_loss(obs))
        total = sum(v for k, v in terms.items() if k.startswith("loss_") and k != "loss_distill")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        if critics:
            soft_update(self.q_target, self.q, self.cfg.ema)
            soft_update(self.qc_target, self.qc, self.cfg.ema)
        return {k: float(v.detach()) for k, v in terms.items()}

    # ---- inference ----------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """One forward pass: a = clip(mu(s, z)); z = 0 unless noise is given."""
        if noise is None:
            noise = torch.zeros(obs.shape[0], self.act_dim, device=obs.device)
        return self.actor(self.normalizer(obs), noise).clamp(-1.0, 1.0)

    @torch.no_grad()
    def safety(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pessimistic Q_safe = max over the ensemble, V_safe)."""
        o = self.normalizer(obs)
        return self.qc(o, action).max(dim=0).values, self.vc(o)

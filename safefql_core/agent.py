"""The SafeFQL agent: flow teacher, one-step actor, feasibility-gated loss, act().

Like FQL, all losses are summed and taken in one optimizer step per batch; the actor's
view of the critics goes through detached parameters (both ensembles in one frozen pass),
so the gated actor loss moves only the actor while the critics learn from their own targets
in the same step. The phased
schedule (paper text) switches the loss terms on per phase; the joint one (reference code,
default) trains everything from step 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from safefql_core import losses
from safefql_core.critics import CriticConfig, OfflineCritics
from safefql_core.nets import FlowField, OneStepPolicy
from safefql_core.throughput import phase


@dataclass
class SafeFQLConfig(CriticConfig):
    """SafeFQL hyperparameters on top of the critics'; boat defaults (docs/DESIGN.md)."""

    flow_hidden: list[int] = field(default_factory=lambda: [128, 128, 128])
    flow_steps: int = 10              # Euler steps of the teacher
    alpha: float = 500.0              # distillation weight (boat; reference range 0.01-100); docs/DESIGN.md
    safety_weight: float = 1e5        # w_s
    normalize_q: bool = True
    normalize_q_scope: str = "reward"  # reference code: "loss" (docs/DESIGN.md's row)
    distill_reduce: str = "sum"       # reference code: "mean", where α_ref = act_dim · α; DESIGN.md
    normalized_branches: bool = False
    gate_threshold: float = -0.05     # paper: 0; docs/DESIGN.md
    schedule: str = "joint"           # or "phased"
    phases: list[float] = field(default_factory=lambda: [0.4, 0.6])  # critic end, teacher end
    actor_loss: str = "gated"         # or "lagrangian" (ablation: no gate)
    lagrangian_eta: float = 1e5       # = safety_weight on purpose: losses.lagrangian_actor_loss

    def check(self) -> None:
        super().check()
        if self.schedule not in ("joint", "phased"):
            raise ValueError(f"schedule must be 'joint' or 'phased', got '{self.schedule}'")
        if self.actor_loss not in ("gated", "lagrangian"):
            raise ValueError(f"actor_loss must be 'gated' or 'lagrangian', got '{self.actor_loss}'")
        if self.normalize_q_scope not in losses.NORMALIZE_Q_SCOPES:
            raise ValueError(f"normalize_q_scope must be one of {losses.NORMALIZE_Q_SCOPES}, got "
                             f"'{self.normalize_q_scope}'")
        if self.distill_reduce not in losses.DISTILL_REDUCES:
            raise ValueError(f"distill_reduce must be one of {losses.DISTILL_REDUCES}, got '{self.distill_reduce}'")


def euler_sample(field_net: FlowField, obs: torch.Tensor, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """Integrate the flow from noise (t=0) to an action (t=1) with fixed Euler steps."""
    x = noise
    for i in range(steps):
        t = torch.full((obs.shape[0], 1), i / steps, device=obs.device)
        x = x + field_net(obs, x, t) / steps
    return x.clamp(-1.0, 1.0)


def flow_loss(field_net: FlowField, obs: torch.Tensor, actions: torch.Tensor,
              weights: torch.Tensor | None = None) -> torch.Tensor:
    """Flow matching on logged actions: z ~ N(0, I), t ~ U[0, 1], x_t = (1 - t) z + t a
    (SAFEFQL.md loss 5), optionally weighted per sample (losses.flow_matching_loss)."""
    noise = torch.randn_like(actions)
    t = torch.rand(obs.shape[0], 1, device=obs.device)
    x_t = (1 - t) * noise + t * actions
    return losses.flow_matching_loss(field_net(obs, x_t, t), noise, actions, weights)


class SafeFQL(OfflineCritics):
    cfg: SafeFQLConfig
    METRICS = (*OfflineCritics.CRITIC_METRICS, "loss_flow", "loss_actor", "loss_distill",
               "feasible_frac", "actor_qr", "actor_qc")

    def __init__(self, obs_dim: int, act_dim: int, cfg: SafeFQLConfig,
                 obs_mean: torch.Tensor, obs_std: torch.Tensor) -> None:
        super().__init__(obs_dim, act_dim, cfg, obs_mean, obs_std)
        self.teacher = FlowField(obs_dim, act_dim, cfg.flow_hidden)
        self.actor = OneStepPolicy(obs_dim, act_dim, cfg.flow_hidden)
        self.make_optimizer()

    def teacher_loss(self, b: dict[str, torch.Tensor], obs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss_flow": flow_loss(self.teacher, obs, b["actions"])}

    def actor_loss(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        noise = torch.randn(obs.shape[0], self.act_dim, device=obs.device)
        with torch.no_grad(), phase("teacher_rollout"):
            target = euler_sample(self.teacher, obs, noise, cfg.flow_steps)
        with phase("actor_forward"):
            mu = self.actor(obs, noise)
            distill = losses.distillation_loss(mu, target, cfg.distill_reduce)
            action = mu.clamp(-1.0, 1.0)
            qr, qc = self.split(self.q_all(obs, action, frozen=True))
            if cfg.actor_loss == "lagrangian":
                loss, info = losses.lagrangian_actor_loss(qr, qc, distill, cfg.alpha, cfg.lagrangian_eta,
                                                          cfg.normalize_q, cfg.gate_threshold, cfg.normalize_q_scope)
            else:
                loss, info = losses.gated_actor_loss(qr, qc, distill, cfg.alpha, cfg.safety_weight,
                                                     cfg.normalize_q, cfg.normalized_branches,
                                                     cfg.gate_threshold, cfg.normalize_q_scope)
        return {"loss_actor": loss, "loss_distill": distill, **info}

    def active_terms(self, step: int) -> tuple[bool, bool, bool]:
        """(critics, teacher, actor) switched on at this step."""
        if self.cfg.schedule == "joint":
            return True, True, True
        critic_end, teacher_end = (int(f * self.cfg.steps) for f in self.cfg.phases)
        return step < critic_end, critic_end <= step < teacher_end, step >= teacher_end

    def update(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        obs = self.normalizer(batch["observations"])
        critics, teacher, actor = self.active_terms(step)
        terms: dict[str, torch.Tensor] = {}
        if critics:
            with phase("critic_forward"):
                terms.update(self.critic_losses(batch, obs, self.normalizer(batch["next_observations"])))
        if teacher:
            with phase("teacher_forward"):
                terms.update(self.teacher_loss(batch, obs))
        if actor:  # labels its teacher roll-out and its own forward pass apart
            terms.update(self.actor_loss(obs))
        return self.step(terms, update_targets=critics)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """One forward pass: a = clip(mu(s, z)); z = 0 unless noise is given."""
        if noise is None:
            noise = torch.zeros(obs.shape[0], self.act_dim, device=obs.device)
        return self.actor(self.normalizer(obs), noise).clamp(-1.0, 1.0)

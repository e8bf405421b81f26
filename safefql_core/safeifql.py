"""SafeIFQL baseline (the SafeFQL paper's, its reference's `safeifql.py`) on SafeFQL's critics.

A flow-matching behaviour policy trained by feasibility-weighted regression, and at decision
time N candidates from it, of which one is kept by the critics. It is FISOR with its DDPM
replaced by a flow: the same weights (fisor.fisor_weights, the reference trains with the same
temperatures and clips), the flow's Euler sampler (agent.euler_sample, 5 steps), and a
different choice among the candidates (`select_candidate`): the reference's `safe_maxq`,
the highest conservative Q_r among the candidates judged feasible (max over the safety
ensemble < 0), the lowest such Q_c when none is. Like the reference, it samples with an EMA
copy of the flow and ranks with the critics' EMA targets.

Evaluate and benchmark only, no bundle (`learners.CAPABILITIES`: no graphs): the runtime's
"denoiser" proposer runs FISOR's DDPM chain and keeps the safest candidate, and its
"proposals" proposer runs a one-step actor graph; neither is this policy. The paper's
comparison needs its returns and costs, which `offline_train.evaluate --run` and
`offline_train.benchmark` measure through `act`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from safefql_core.agent import euler_sample, flow_loss
from safefql_core.critics import OfflineCritics, soft_update
from safefql_core.fisor import FeasibilityWeightsConfig, behaviour_weights
from safefql_core.nets import FlowField
from safefql_core.throughput import phase


@dataclass
class SafeIFQLConfig(FeasibilityWeightsConfig):
    """The reference's `safeifql` settings where they are not the critics' (docs/DESIGN.md,
    "The SafeIFQL baseline")."""

    flow_hidden: list[int] = field(default_factory=lambda: [128, 128, 128])  # reference: 3 x 256
    flow_steps: int = 5          # Euler steps of the sampler (reference T)
    candidates: int = 16         # reference N
    flow_ema: float = 0.001      # the sampling copy's EMA rate (reference actor_tau)


def select_candidate(q_reward: torch.Tensor, q_safe: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Index per row [n] of [n, N] candidate values: among the candidates with Q_safe below
    `threshold` the one with the highest Q_reward, else (none feasible) the lowest Q_safe.
    q_reward is already the conservative (min) and q_safe the pessimistic (max) ensemble value."""
    feasible = q_safe < threshold
    best_feasible = torch.where(feasible, q_reward, torch.full_like(q_reward, -torch.inf)).argmax(dim=1)
    return torch.where(feasible.any(dim=1), best_feasible, q_safe.argmin(dim=1))


class SafeIFQL(OfflineCritics):
    cfg: SafeIFQLConfig
    METRICS = (*OfflineCritics.CRITIC_METRICS, "loss_flow", "mean_weight")

    def __init__(self, obs_dim: int, act_dim: int, cfg: SafeIFQLConfig,
                 obs_mean: torch.Tensor, obs_std: torch.Tensor) -> None:
        super().__init__(obs_dim, act_dim, cfg, obs_mean, obs_std)
        self.flow = FlowField(obs_dim, act_dim, cfg.flow_hidden)
        self.flow_target = copy.deepcopy(self.flow).requires_grad_(False)
        self.make_optimizer()

    def weighted_flow_loss(self, b: dict[str, torch.Tensor], obs: torch.Tensor) -> dict[str, torch.Tensor]:
        w = behaviour_weights(self, obs, b["actions"], self.cfg)
        return {"loss_flow": flow_loss(self.flow, obs, b["actions"], w), "mean_weight": w.mean()}

    def update(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        out = self.critics_and_policy_step(batch, self.weighted_flow_loss)
        with phase("target_update"):
            soft_update(self.flow_target, self.flow, self.cfg.flow_ema)
        return out

    @torch.no_grad()
    def act(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """N candidates per state from the EMA flow, one kept by `select_candidate` on the
        target critics (N = 1: the sample itself, as the reference's fast path).

        The candidates' noise comes from torch's global generator (seed it for reproducibility);
        a per-state noise as SafeFQL takes has no meaning here and is refused."""
        if noise is not None:
            raise ValueError("SafeIFQL draws its own candidate noise; evaluate it with --noise zero")
        n, c = obs.shape[0], self.cfg.candidates
        obs_n = self.normalizer(obs).repeat_interleave(c, dim=0)
        actions = euler_sample(self.flow_target, obs_n, torch.randn(n * c, self.act_dim, device=obs.device),
                               self.cfg.flow_steps)
        if c == 1:
            return actions
        q_r, q_c = self.split(self.q_all_target(obs_n, actions))
        best = select_candidate(q_r.min(dim=0).values.view(n, c), q_c.max(dim=0).values.view(n, c))
        return actions.view(n, c, -1)[torch.arange(n, device=obs.device), best]

"""FISOR-style baseline (Zheng et al., ICLR 2024) on SafeFQL's critics and data.

A DDPM behaviour policy with few denoising steps, trained by feasibility-weighted
regression, and at decision time N sampled candidates of which the one with the lowest
pessimistic Q_safe is sent. Weights (SAFEFQL.md, in our sign convention: Q_c < 0 safe):

    infeasible state (V_c > 0):  clip(exp(5 (V_c - Q_c)), 0, 150)   -> prefer lower risk
    feasible state, safe action:  clip(exp(3 (Q_r - V_r)), 0, 100)   -> prefer higher reward
    feasible state, unsafe action: 0

It exists to be compared with SafeFQL: same critics, same data, same bundle and runtime,
so the latency benchmark measures the policy class, not the plumbing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from safefql_core.critics import CriticConfig, OfflineCritics
from safefql_core.ddpm import reverse_chain, vp_schedule
from safefql_core.nets import MLP


@dataclass
class FeasibilityWeightsConfig(CriticConfig):
    """The weights' temperatures and clips (module docstring): FISOR's, and SafeIFQL's
    (safefql_core.safeifql), whose reference trains with the same four values."""

    infeasible_temperature: float = 5.0
    infeasible_clip: float = 150.0
    feasible_temperature: float = 3.0
    feasible_clip: float = 100.0


@dataclass
class FISORConfig(FeasibilityWeightsConfig):
    denoiser_hidden: list[int] = field(default_factory=lambda: [128, 128, 128])
    diffusion_steps: int = 5
    candidates: int = 16


def fisor_weights(qr: torch.Tensor, vr: torch.Tensor, qc: torch.Tensor, vc: torch.Tensor,
                  cfg: FeasibilityWeightsConfig) -> torch.Tensor:
    """Per-sample regression weights (see module docstring); qr, qc already reduced."""
    infeasible = (vc > 0).float()
    w_unsafe_state = torch.clamp(torch.exp(cfg.infeasible_temperature * (vc - qc)), 0, cfg.infeasible_clip)
    w_safe_state = (qc <= 0).float() * torch.clamp(torch.exp(cfg.feasible_temperature * (qr - vr)),
                                                   0, cfg.feasible_clip)
    return infeasible * w_unsafe_state + (1 - infeasible) * w_safe_state


def behaviour_weights(critics: OfflineCritics, obs: torch.Tensor, actions: torch.Tensor,
                      cfg: FeasibilityWeightsConfig) -> torch.Tensor:
    """fisor_weights of logged (s, a) from the EMA target ensembles (min over Q_r, max over
    Q_c) and the online values, as both references compute them; no gradient: the weights
    rank the data, they are not trained through."""
    with torch.no_grad():
        q_bar, qc_bar = critics.split(critics.q_all_target(obs, actions))
        v, vc = critics.v_all(obs)
        return fisor_weights(q_bar.min(dim=0).values, v, qc_bar.max(dim=0).values, vc, cfg)


class Denoiser(torch.nn.Module):
    """eps_theta(s, x_t, t) with t given as a scalar in [0, 1]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int]) -> None:
        super().__init__()
        self.mlp = MLP(obs_dim + act_dim + 1, act_dim, hidden, "gelu")

    def forward(self, obs: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(obs, x, t)


class FISOR(OfflineCritics):
    cfg: FISORConfig
    betas: torch.Tensor  # buffers (register_buffer), typed for the checker
    alpha_bars: torch.Tensor
    METRICS = (*OfflineCritics.CRITIC_METRICS, "loss_diffusion", "mean_weight")

    def __init__(self, obs_dim: int, act_dim: int, cfg: FISORConfig,
                 obs_mean: torch.Tensor, obs_std: torch.Tensor) -> None:
        super().__init__(obs_dim, act_dim, cfg, obs_mean, obs_std)
        self.denoiser = Denoiser(obs_dim, act_dim, cfg.denoiser_hidden)
        betas = torch.as_tensor(vp_schedule(cfg.diffusion_steps), dtype=torch.float32)
        self.register_buffer("betas", betas)
        self.register_buffer("alpha_bars", torch.cumprod(1 - betas, dim=0))
        self.make_optimizer()

    def diffusion_loss(self, b: dict[str, torch.Tensor], obs: torch.Tensor) -> dict[str, torch.Tensor]:
        w = behaviour_weights(self, obs, b["actions"], self.cfg)
        k = torch.randint(self.cfg.diffusion_steps, (obs.shape[0],), device=obs.device)
        ab = self.alpha_bars[k].unsqueeze(-1)
        noise = torch.randn_like(b["actions"])
        x_k = ab.sqrt() * b["actions"] + (1 - ab).sqrt() * noise
        t = (k.float() / self.cfg.diffusion_steps).unsqueeze(-1)
        err = (self.denoiser(obs, x_k, t) - noise).pow(2).sum(dim=-1)
        return {"loss_diffusion": (w * err).mean(), "mean_weight": w.mean()}

    def update(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        return self.critics_and_policy_step(batch, self.diffusion_loss)

    @torch.no_grad()
    def sample(self, obs_n: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Reverse DDPM chain from x_T = noise[0] with per-step noises noise[1:] (normalised obs)."""
        def denoise(x: torch.Tensor, t: float) -> torch.Tensor:
            return self.denoiser(obs_n, x, torch.full((x.shape[0], 1), t))

        return reverse_chain(denoise, noise.__getitem__, self.betas, self.alpha_bars, torch.sqrt)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """N candidates per state, keep the one with the lowest pessimistic Q_safe.

        The chain's noise comes from torch's global generator (seed it for reproducibility);
        a per-state noise as SafeFQL takes has no meaning here and is refused.
        """
        if noise is not None:
            raise ValueError("FISOR draws its own candidate noise; evaluate it with --noise zero")
        n, c = obs.shape[0], self.cfg.candidates
        obs_n = self.normalizer(obs).repeat_interleave(c, dim=0)
        actions = self.sample(obs_n, torch.randn(self.cfg.diffusion_steps, n * c, self.act_dim))
        q_safe = self.qc(obs_n, actions).max(dim=0).values.view(n, c)
        best = q_safe.argmin(dim=1)
        return actions.view(n, c, -1)[torch.arange(n), best]

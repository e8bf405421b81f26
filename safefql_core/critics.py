"""The critics every safe offline learner here shares: IQL reward critic + HJ safety critic.

SafeFQL and the FISOR-style baseline differ only in their policies; training both on the
same critic code is what makes the comparison (and the latency benchmark) fair.

Layout (for speed, docs/BENCHMARKS.md "Training throughput"): the reward ensemble Q_r and the
safety ensemble Q_c are one ensemble of 2 x critic_members members, Q_r's first (`q_all`, its
EMA target `q_all_target`), and V, V_c one ensemble of two (`v_all`): every layer of the four
critics is one batched matmul. Each keeps its own parameters, so the losses are those of
separate networks. `q`, `qc`, `v`, `vc` are views of them for inference and export, and a
checkpoint of the earlier layout (separate modules) is stacked on load (`stack_old_layout`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, cast

import torch
from torch import nn

from safefql_core import losses
from safefql_core.config import ConfigMixin
from safefql_core.nets import MLP, Critic, Normalizer, Value
from safefql_core.throughput import phase


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


# Checkpoints written before the stacked layout: (new module, its two old modules), stacked
# in this order on load.
OLD_LAYOUT = {"q_all": ("q", "qc"), "q_all_target": ("q_target", "qc_target"), "v_all": ("v", "vc")}


def is_old_layout(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a learner's state dict has separate critic modules (checkpoints before stacking)."""
    return f"{OLD_LAYOUT['q_all'][0]}.mlp.net.0.weight" in state


def stack_old_layout(state: Mapping[str, torch.Tensor], current: Mapping[str, torch.Tensor]
                     ) -> dict[str, torch.Tensor]:
    """A state dict of the separate-module layout in the stacked one (`current` gives the shapes):
    ensemble tensors concatenate along the member axis, single networks' (nn.Linear's
    [out, in] weights transposed) and layer norms' stack into one member or group each."""
    if not is_old_layout(state):
        return dict(state)
    out = {k: v for k, v in state.items() if k.split(".")[0] not in {n for p in OLD_LAYOUT.values() for n in p}}
    for key, shape in ((k, v.shape) for k, v in current.items()):
        name, _, rest = key.partition(".")
        if name in OLD_LAYOUT:
            a, b = (state[f"{old}.{rest}"] for old in OLD_LAYOUT[name])
            if a.dim() == 2:
                a, b = a.T, b.T
            out[key] = (torch.cat([a, b]) if a.dim() == len(shape) else torch.stack([a, b])).reshape(shape)
    return out


def soft_update(target: nn.Module, source: nn.Module, rate: float) -> None:
    """target <- target + rate (source - target), all parameters in one foreach operation."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), rate)


class OfflineCritics(nn.Module):
    """Reward Q ensemble + V (IQL), safety Q_c ensemble + V_c (HJ max-backup), EMA targets."""

    CRITIC_METRICS = ("loss_v", "loss_q", "loss_vc", "loss_qc")

    def __init__(self, obs_dim: int, act_dim: int, cfg: CriticConfig,
                 obs_mean: torch.Tensor, obs_std: torch.Tensor) -> None:
        super().__init__()
        self.cfg, self.obs_dim, self.act_dim = cfg, obs_dim, act_dim
        self.normalizer = Normalizer(obs_mean, obs_std)
        members, hidden, ln = cfg.critic_members, cfg.critic_hidden, cfg.critic_layer_norm
        self.q_all = Critic(MLP(obs_dim + act_dim, 1, hidden, "relu", 2 * members, ln, groups=2))
        self.v_all = Value(MLP(obs_dim, 1, hidden, "relu", 2, ln, groups=2))
        self.q_all_target = copy.deepcopy(self.q_all).requires_grad_(False)

    # Views (nets.members_view): the separate critics, for inference and export only.
    @property
    def q(self) -> Critic:
        return self.q_all.members_view(0, self.cfg.critic_members)

    @property
    def qc(self) -> Critic:
        return self.q_all.members_view(self.cfg.critic_members, 2 * self.cfg.critic_members)

    @property
    def v(self) -> Value:
        return self.v_all.member_view(0)

    @property
    def vc(self) -> Value:
        return self.v_all.member_view(1)

    def split(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[2m, batch] of the stacked ensemble -> (Q_r [m, batch], Q_c [m, batch])."""
        return q[:self.cfg.critic_members], q[self.cfg.critic_members:]

    def make_optimizer(self) -> None:
        """One Adam over every trainable parameter (call once the subclass built its nets).

        fused: the whole step is one operation instead of ~20 per parameter tensor."""
        self.optimizer = torch.optim.Adam([p for p in self.parameters() if p.requires_grad],
                                          lr=self.cfg.lr, fused=True)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """As nn.Module's, accepting the separate-critic layout of earlier runs and bundles."""
        return super().load_state_dict(stack_old_layout(state_dict, self.state_dict()), strict, assign)

    def critic_losses(self, b: dict[str, torch.Tensor], obs: torch.Tensor,
                      next_obs: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        with torch.no_grad():
            q_bar, qc_bar = self.split(self.q_all_target(obs, b["actions"]))
            (next_v, next_vc), gamma_c = self.v_all(next_obs), cfg.safety_gamma or cfg.gamma
            if "valid" in b:  # n-step windows (TensorBatches with horizon > 1)
                y = losses.n_step_reward_target(b["reward_seq"], b["valid"], b["steps"], b["masks"],
                                                next_v, cfg.gamma)
                yc = losses.n_step_safety_target(b["margin_seq"], b["valid"], b["steps"], b["masks"],
                                                 next_vc, gamma_c, cfg.safety_backup)
            else:
                y = losses.reward_q_target(b["rewards"], b["masks"], next_v, cfg.gamma)
                yc = losses.safety_q_target(b["margins"], b["masks"], next_vc, gamma_c, cfg.safety_backup)
        q, qc = self.split(self.q_all(obs, b["actions"]))
        v, vc = self.v_all(obs)
        return {
            "loss_v": losses.reward_value_loss(q_bar, v, cfg.expectile),
            "loss_q": losses.ensemble_mse(q, y),
            "loss_vc": losses.safety_value_loss(qc_bar, vc, cfg.safety_expectile),
            "loss_qc": losses.ensemble_mse(qc, yc),
        }

    def critics_and_policy_step(self, batch: dict[str, torch.Tensor],
                                policy_loss: Callable[[dict[str, torch.Tensor], torch.Tensor], dict[str, torch.Tensor]]
                                ) -> dict[str, torch.Tensor]:
        """One update of a learner whose policy is regressed on the logged actions (FISOR-style,
        SafeIFQL): the critics' losses and `policy_loss(batch, normalised obs)` in one step."""
        obs = self.normalizer(batch["observations"])
        with phase("critic_forward"):
            terms = self.critic_losses(batch, obs, self.normalizer(batch["next_observations"]))
        with phase("policy_forward"):
            terms.update(policy_loss(batch, obs))
        return self.step(terms, update_targets=True)

    def step(self, terms: dict[str, torch.Tensor], update_targets: bool) -> dict[str, torch.Tensor]:
        """Sum the `loss_*` terms, take one optimizer step, move the EMA target.

        Returns the terms as detached tensors, not floats: reading a value back waits for
        the device, so the training loop reads them only when it logs."""
        total = cast(torch.Tensor, sum(v for k, v in terms.items() if k.startswith("loss_") and k != "loss_distill"))
        with phase("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
        with phase("optimizer"):
            self.optimizer.step()
        if update_targets:
            with phase("target_update"):
                soft_update(self.q_all_target, self.q_all, self.cfg.ema)
        return {k: v.detach() for k, v in terms.items()}

    @torch.no_grad()
    def safety(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pessimistic Q_safe = max over the ensemble, V_safe) at raw observations."""
        o = self.normalizer(obs)
        return self.qc.pessimistic(o, action), self.vc(o)

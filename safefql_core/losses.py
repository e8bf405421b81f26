"""SafeFQL's losses, each a small pure function of tensors (SAFEFQL.md, "Losses").

Shapes: ensembles are [members, batch]; everything else [batch] or [batch, act_dim].
Signs: reward critics are maximised; safety critics approximate the HJ feasibility value
max_t l(s_t), so Q_c < 0 means safe, and pessimism is always the max over the ensemble.
"""
from __future__ import annotations

import torch


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """E[|tau - 1(u < 0)| u^2]: with tau > 0.5 the minimiser tracks an upper expectile of u's target."""
    weight = torch.abs(tau - (diff < 0).float())
    return (weight * diff.pow(2)).mean()


def reward_value_loss(q_target: torch.Tensor, v: torch.Tensor, tau: float) -> torch.Tensor:
    """IQL value: V(s) -> upper expectile of min_j Qbar_j(s, a) over the data's actions."""
    return expectile_loss(q_target.min(dim=0).values - v, tau)


def reward_q_target(rewards: torch.Tensor, masks: torch.Tensor, next_v: torch.Tensor,
                    gamma: float) -> torch.Tensor:
    return rewards + gamma * masks * next_v


def ensemble_mse(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over members of the mean squared error to one shared target."""
    return (q - target.unsqueeze(0)).pow(2).mean(dim=1).sum()


def safety_q_target(margins: torch.Tensor, masks: torch.Tensor, next_vc: torch.Tensor,
                    gamma: float, backup: str = "reference") -> torch.Tensor:
    """Discounted HJ max-backup target for Q_c.

    reference (default): (1 - g) l + g max(l, V_c(s'));  paper: max(l, g V_c(s')).
    At true terminals (mask 0) the future is gone and the target is l(s).
    """
    if backup == "reference":
        target = (1.0 - gamma) * margins + gamma * torch.maximum(margins, next_vc)
    elif backup == "paper":
        target = torch.maximum(margins, gamma * next_vc)
    else:
        raise ValueError(f"unknown safety backup '{backup}'; use 'reference' or 'paper'")
    return masks * target + (1.0 - masks) * margins


def n_step_reward_target(reward_seq: torch.Tensor, valid: torch.Tensor, steps: torch.Tensor,
                         masks: torch.Tensor, next_v: torch.Tensor, gamma: float) -> torch.Tensor:
    """sum_k g^k r_{t+k} over the window + g^n m V(s_{t+n}), n = the window's length.

    reward_seq, valid: [B, n_max]; steps, masks, next_v: [B] at the window's last step.
    A window of one step is reward_q_target.
    """
    discounts = gamma ** torch.arange(reward_seq.shape[1], dtype=reward_seq.dtype, device=reward_seq.device)
    return (reward_seq * valid * discounts).sum(dim=1) + gamma ** steps * masks * next_v


def n_step_safety_target(margin_seq: torch.Tensor, valid: torch.Tensor, steps: torch.Tensor,
                         masks: torch.Tensor, next_vc: torch.Tensor, gamma: float,
                         backup: str = "reference") -> torch.Tensor:
    """The HJ backup applied along the logged window, from its end back to its start.

    y_n = V_c(s_{t+n}); y_k = safety_q_target(l_{t+k}, m_k, y_{k+1}), where m_k is the
    episode's mask at the window's last step and 1 inside it (a window never spans an
    episode end). The max is taken at every step, so a violation anywhere in the window
    reaches Q_c(s_t, a_t) in one update instead of n. A window of one step is safety_q_target.
    """
    y = next_vc
    for k in reversed(range(margin_seq.shape[1])):
        mask_k = torch.where(steps == k + 1, masks, torch.ones_like(masks))
        y = torch.where(valid[:, k] > 0, safety_q_target(margin_seq[:, k], mask_k, y, gamma, backup), y)
    return y


def safety_value_loss(qc_target: torch.Tensor, vc: torch.Tensor, tau: float) -> torch.Tensor:
    """V_c(s) -> a LOW expectile (level 1 - tau) of the pessimistic max_j Qbar_c,j(s, a).

    Mirrored IQL: the best (lowest-risk) actions in the data define feasibility, while the
    max over the ensemble keeps each Q estimate pessimistic.
    """
    return expectile_loss(qc_target.max(dim=0).values - vc, 1.0 - tau)


def flow_matching_loss(velocity: torch.Tensor, noise: torch.Tensor, actions: torch.Tensor,
                       weights: torch.Tensor | None = None) -> torch.Tensor:
    """Rectified-flow BC: v(s, x_t, t) regresses the straight-line velocity a - z.

    With `weights` [batch] each sample's squared error (summed over the action's dimensions)
    is scaled by its weight before the batch mean: SafeIFQL's feasibility-weighted flow."""
    err = (velocity - (actions - noise)).pow(2).sum(dim=-1)
    return (err if weights is None else weights * err).mean()


DISTILL_REDUCES = ("sum", "mean")
NORMALIZE_Q_SCOPES = ("reward", "loss")


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
    """|mu(s, z) - teacher(s, z)|^2 with the same z; the teacher side carries no gradient.

    reduce 'sum' (ours) sums over the action's dimensions, 'mean' (the reference code) averages
    them: α with 'sum' equals act_dim · α with 'mean' (docs/DESIGN.md, its `distill_reduce` row)."""
    squared = (student - teacher.detach()).pow(2)
    return squared.sum(dim=-1).mean() if reduce == "sum" else squared.mean()


def feasibility_gate(qc: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """zeta = 1{max_j Q_c,j(s, a) < threshold}: 1 where the action is judged feasible."""
    return (qc.max(dim=0).values < threshold).float()


def q_magnitude(q_r: torch.Tensor) -> torch.Tensor:
    """λ = stopgrad(mean |Q_r|), kept off 0: what normalize_q divides by."""
    return q_r.abs().mean().detach().clamp_min(1e-6)


def actor_reward_term(q_r: torch.Tensor, normalize_q: bool) -> torch.Tensor:
    """-Q_r per sample, divided by λ = stopgrad(mean |Q_r|) when normalize_q (alpha scale free)."""
    return -q_r / q_magnitude(q_r) if normalize_q else -q_r


def reward_scaling(q_r: torch.Tensor, normalize_q: bool, scope: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(the reward term per sample, the divisor of the whole policy term) under normalize_q.

    scope 'reward' (ours) divides the reward term alone by λ, so the safety branch keeps its
    weight w_s; 'loss' (the reference code) divides the whole gated term, both branches, by λ:
    its w_s is then ours times λ (docs/DESIGN.md, its `normalize_q_scope` row). Without normalize_q
    both are -Q_r and 1."""
    if scope not in NORMALIZE_Q_SCOPES:  # any other word would silently mean 'reward'
        raise ValueError(f"normalize_q_scope must be one of {NORMALIZE_Q_SCOPES}, got {scope!r}")
    one = torch.ones((), dtype=q_r.dtype, device=q_r.device)
    if scope == "loss" and normalize_q:
        return -q_r, q_magnitude(q_r)
    return actor_reward_term(q_r, normalize_q), one


def gated_actor_loss(qr: torch.Tensor, qc: torch.Tensor, distill: torch.Tensor, alpha: float,
                     safety_weight: float, normalize_q: bool = True, normalized_branches: bool = False,
                     gate_threshold: float = 0.0, normalize_q_scope: str = "reward"
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """alpha L_d + E[zeta (-Q_r) + (1 - zeta) w_s max(Q_c, 0)]  (SAFEFQL.md loss 7).

    qr, qc: ensembles [members, batch] evaluated at the actor's clipped action.
    normalize_q divides the reward term (normalize_q_scope 'reward') or the whole policy term
    ('loss') by stopgrad(mean |Q_r|) so alpha is scale free (`reward_scaling`).
    normalized_branches averages each branch over its own samples instead of the batch.
    gate_threshold < 0 (a deviation; the paper uses 0) demands a clearance margin: an action
    counts as feasible only if Q_c < threshold, and the safety branch pushes Q_c below it.
    """
    q_r = qr.min(dim=0).values
    q_c = qc.max(dim=0).values
    gate = feasibility_gate(qc, gate_threshold)
    reward_term, scale = reward_scaling(q_r, normalize_q, normalize_q_scope)
    # Infeasible means Q_c >= threshold, so the safety branch pushes Q_c below the threshold.
    safety_term = safety_weight * torch.relu(q_c - gate_threshold)
    if normalized_branches:
        policy = (gate * reward_term).sum() / gate.sum().clamp_min(1.0) \
            + ((1 - gate) * safety_term).sum() / (1 - gate).sum().clamp_min(1.0)
    else:
        policy = (gate * reward_term + (1 - gate) * safety_term).mean()
    loss = alpha * distill + policy / scale
    return loss, {"feasible_frac": gate.mean(), "actor_qr": q_r.mean(), "actor_qc": q_c.mean()}


def lagrangian_actor_loss(qr: torch.Tensor, qc: torch.Tensor, distill: torch.Tensor, alpha: float,
                          eta: float, normalize_q: bool = True, threshold: float = 0.0,
                          normalize_q_scope: str = "reward") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """alpha L_d + E[-Q_r + eta max(Q_c - threshold, 0)]: the gate's ablation (no switch).

    Both terms act on every sample, where the gated loss optimises reward only on feasible
    samples and safety only on the others. With threshold 0 this is exactly
    -Q_r + eta max(0, Q_c); SafeFQL passes its gate_threshold so that the ablation changes
    the gate alone, not the clearance it asks for. normalize_q and its scope as in gated_actor_loss.
    feasible_frac reports the fraction the gate would have called feasible, for comparison.

    Choice of eta (SafeFQLConfig.lagrangian_eta = 1e5, the default safety_weight): a hinge
    is an exact penalty — any eta above the constrained problem's KKT multiplier yields the
    hard constraint's solution. On the boat that multiplier is set by the distillation pull,
    not by the reward: moving the action by |da| costs ~2 alpha |da| of L_d and lowers Q_c
    by only ~0.005 |da| (docs/DESIGN.md), so an action can move ~eta / (400 alpha) away from
    the teacher (~0.5 at alpha 500), while the normalised reward term (gradient ~0.002) is
    negligible next to both. With eta = w_s the ablation changes the switch alone (reward is
    also optimised on infeasible samples, safety with the same weight as the gate's); a
    smaller eta would measure an under-weighted penalty instead of the gate.
    """
    q_r = qr.min(dim=0).values
    q_c = qc.max(dim=0).values
    reward_term, scale = reward_scaling(q_r, normalize_q, normalize_q_scope)
    policy = (reward_term + eta * torch.relu(q_c - threshold)).mean()
    return alpha * distill + policy / scale, {"feasible_frac": feasibility_gate(qc, threshold).mean(),
                                      "actor_qr": q_r.mean(), "actor_qc": q_c.mean()}

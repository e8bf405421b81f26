"""Each SafeFQL loss checked against values computed by hand (SAFEFQL.md, "Losses")."""
import numpy as np
import pytest
import torch

from safefql_core import losses


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


def test_expectile_weights_asymmetric():
    # u = +2 weighted by tau, u = -2 by 1 - tau: (0.9 * 4 + 0.1 * 4) / 2 = 2.0
    assert losses.expectile_loss(t(2.0, -2.0), 0.9).item() == pytest.approx(2.0)
    # only positive residuals: 0.9 * (1 + 9) / 2 = 4.5
    assert losses.expectile_loss(t(1.0, 3.0), 0.9).item() == pytest.approx(4.5)
    # only negative residuals: 0.1 * (1 + 9) / 2 = 0.5
    assert losses.expectile_loss(t(-1.0, -3.0), 0.9).item() == pytest.approx(0.5)


def test_reward_value_uses_min_over_ensemble():
    q = torch.tensor([[1.0, 5.0], [3.0, 2.0]])  # members x batch -> min = [1, 2]
    v = t(0.0, 4.0)                               # residuals [1, -2]
    expected = (0.9 * 1.0 + 0.1 * 4.0) / 2
    assert losses.reward_value_loss(q, v, 0.9).item() == pytest.approx(expected)


def test_reward_target_bootstraps_unless_terminal():
    y = losses.reward_q_target(t(-1.0, -1.0), t(1.0, 0.0), t(10.0, 10.0), 0.9)
    assert y.tolist() == pytest.approx([8.0, -1.0])


def test_ensemble_mse_sums_members():
    q = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    assert losses.ensemble_mse(q, t(0.0, 0.0)).item() == pytest.approx(2.5 + 0.0)


def test_safety_target_reference_form():
    # l = -1, V'(s') = 0.5: (1 - .9)(-1) + .9 * max(-1, .5) = -0.1 + 0.45 = 0.35
    # l = 2, V' = -3 (terminal flag off): 0.1 * 2 + 0.9 * 2 = 2
    y = losses.safety_q_target(t(-1.0, 2.0), t(1.0, 1.0), t(0.5, -3.0), 0.9, "reference")
    assert y.tolist() == pytest.approx([0.35, 2.0])


def test_safety_target_paper_form_and_terminal():
    # paper: max(l, g V'): max(-1, .45) = .45; terminal -> l
    y = losses.safety_q_target(t(-1.0, -1.0), t(1.0, 0.0), t(0.5, 0.5), 0.9, "paper")
    assert y.tolist() == pytest.approx([0.45, -1.0])
    with pytest.raises(ValueError, match="unknown safety backup"):
        losses.safety_q_target(t(0.0), t(1.0), t(0.0), 0.9, "other")


def test_safety_value_tracks_low_expectile_of_max():
    qc = torch.tensor([[1.0, -2.0], [0.0, -1.0]])  # max over members = [1, -1]
    vc = t(0.0, 0.0)                                 # residuals [1, -1]
    # mirrored: positive residuals weighted 0.1, negative 0.9
    expected = (0.1 * 1.0 + 0.9 * 1.0) / 2
    assert losses.safety_value_loss(qc, vc, 0.9).item() == pytest.approx(expected)


def test_safety_value_minimiser_is_low():
    """Fitting a constant V_c to samples gives a value below their mean (level 0.1)."""
    samples = torch.linspace(-1, 1, 101).unsqueeze(0)
    v = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([v], lr=0.5)
    for _ in range(500):
        opt.zero_grad()
        losses.safety_value_loss(samples, v.expand(101), 0.9).backward()
        opt.step()
    assert v.item() < -0.4


def test_flow_matching_target_is_a_minus_z():
    a, z = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert losses.flow_matching_loss(a - z, z, a).item() == 0.0
    assert losses.flow_matching_loss(torch.zeros(1, 2), z, a).item() == pytest.approx(2.0)


def test_distillation_blocks_teacher_gradient():
    student = torch.tensor([[0.5, 0.5]], requires_grad=True)
    teacher = torch.tensor([[1.0, 0.0]], requires_grad=True)
    loss = losses.distillation_loss(student, teacher)
    assert loss.item() == pytest.approx(0.5)
    loss.backward()
    assert teacher.grad is None
    assert student.grad.tolist() == [[-1.0, 1.0]]


def test_gate_uses_pessimistic_max():
    qc = torch.tensor([[-1.0, -1.0, 0.5], [-0.5, 0.2, -2.0]])
    assert losses.feasibility_gate(qc).tolist() == [1.0, 0.0, 0.0]
    assert losses.feasibility_gate(qc, threshold=0.3).tolist() == [1.0, 1.0, 0.0]


def test_gated_actor_loss_branches():
    qr = torch.tensor([[-10.0, -4.0], [-8.0, -6.0]])   # min = [-10, -6]
    qc = torch.tensor([[-1.0, 2.0], [-0.5, 1.0]])      # max = [-0.5, 2]: first feasible
    distill = torch.tensor(0.25)
    loss, info = losses.gated_actor_loss(qr, qc, distill, alpha=2.0, safety_weight=10.0,
                                         normalize_q=False)
    # 2 * 0.25 + mean([10 (feasible: -Q_r), 10 * 2 (infeasible: w_s max(Qc,0))]) = 0.5 + 15
    assert loss.item() == pytest.approx(15.5)
    assert info["feasible_frac"].item() == pytest.approx(0.5)


def test_gated_actor_loss_normalisations():
    qr = torch.tensor([[-10.0, -6.0, -2.0]])
    qc = torch.tensor([[-1.0, -1.0, 3.0]])
    # normalize_q: -Q_r / mean|Q_r| (6) -> [10/6, 1, .]; batch mean of [10/6, 1, 3*1]
    loss, _ = losses.gated_actor_loss(qr, qc, torch.tensor(0.0), 1.0, 1.0, normalize_q=True)
    assert loss.item() == pytest.approx((10 / 6 + 1 + 3) / 3)
    # normalized branches: mean over feasible (10/6+1)/2 + mean over infeasible 3
    loss, _ = losses.gated_actor_loss(qr, qc, torch.tensor(0.0), 1.0, 1.0, normalize_q=True,
                                      normalized_branches=True)
    assert loss.item() == pytest.approx((10 / 6 + 1) / 2 + 3)


def test_actor_gradient_pushes_infeasible_action_down_qc():
    action = torch.tensor([[1.0]], requires_grad=True)
    qc = (2.0 * action).T          # Q_c = 2a > 0: infeasible
    qr = -(action ** 2).T
    loss, _ = losses.gated_actor_loss(qr, qc, torch.tensor(0.0), 1.0, 5.0, normalize_q=False)
    loss.backward()
    assert action.grad.item() == pytest.approx(10.0)  # d(w_s * 2a)/da: descent lowers Q_c


def test_gate_threshold_moves_both_gate_and_safety_target():
    qr = torch.tensor([[-1.0, -1.0]])
    qc = torch.tensor([[-0.05, -0.5]])    # first is within the 0.1 margin -> infeasible
    loss, info = losses.gated_actor_loss(qr, qc, torch.tensor(0.0), 1.0, 10.0, normalize_q=False,
                                         gate_threshold=-0.1)
    # mean([10 * relu(-0.05 + 0.1), -(-1)]) = (0.5 + 1) / 2
    assert loss.item() == pytest.approx(0.75)
    assert info["feasible_frac"].item() == pytest.approx(0.5)


def test_lagrangian_actor_loss_has_no_gate():
    qr = torch.tensor([[-10.0, -4.0], [-8.0, -6.0]])   # min = [-10, -6]
    qc = torch.tensor([[-1.0, 2.0], [-0.5, 1.0]])      # max = [-0.5, 2]
    distill = torch.tensor(0.25)
    loss, info = losses.lagrangian_actor_loss(qr, qc, distill, alpha=2.0, eta=10.0, normalize_q=False)
    # 2 * 0.25 + mean([10 + 10 * 0, 6 + 10 * 2]) = 0.5 + 18; the gated loss drops the 6 (15.5)
    assert loss.item() == pytest.approx(18.5)
    assert info["feasible_frac"].item() == pytest.approx(0.5)


def test_lagrangian_actor_loss_normalisation_and_threshold():
    qr = torch.tensor([[-10.0, -6.0]])   # mean |Q_r| = 8 -> reward terms [1.25, 0.75]
    qc = torch.tensor([[-0.5, 2.0]])     # threshold -1: relu(0.5) = 0.5, relu(3) = 3
    loss, info = losses.lagrangian_actor_loss(qr, qc, torch.tensor(0.25), alpha=2.0, eta=10.0,
                                              normalize_q=True, threshold=-1.0)
    # 0.5 + mean([1.25 + 5, 0.75 + 30]) = 0.5 + 18.5
    assert loss.item() == pytest.approx(19.0)
    assert info["feasible_frac"].item() == 0.0     # both above the threshold


def test_lagrangian_gradient_keeps_reward_on_infeasible_action():
    action = torch.tensor([[1.0]], requires_grad=True)
    qc = (2.0 * action).T          # Q_c = 2a > 0: infeasible
    qr = -(action ** 2).T
    loss, _ = losses.lagrangian_actor_loss(qr, qc, torch.tensor(0.0), 1.0, 5.0, normalize_q=False)
    loss.backward()
    assert action.grad.item() == pytest.approx(2.0 + 10.0)  # d(a^2)/da + eta * d(2a)/da


def test_n_step_reward_target_sums_the_window_then_bootstraps():
    # window of 3 (γ 0.5): -1 + .5 * -2 + .25 * -4 = -3, then γ^3 V' = .125 * 8 = 1 -> -2
    # window cut to 1 step by its episode end (terminal, mask 0): -1 only
    y = losses.n_step_reward_target(torch.tensor([[-1.0, -2.0, -4.0], [-1.0, -9.0, -9.0]]),
                                    torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]),
                                    t(3.0, 1.0), t(1.0, 0.0), t(8.0, 8.0), 0.5)
    assert y.tolist() == pytest.approx([-2.0, -1.0])


def test_n_step_safety_target_backs_up_a_violation_in_one_update():
    # reference form, γ 0.5, margins [-1, 3, -1], V' = -2:
    #   y3 = -2; y2 = .5(-1) + .5 max(-1, -2) = -1; y1 = .5(3) + .5 max(3, -1) = 3;
    #   y0 = .5(-1) + .5 max(-1, 3) = 1  -> the violation two steps ahead makes Q_c > 0 now
    # second row: window cut after 2 steps at a terminal (mask 0): y1 = l1 = 3, y0 = 1
    margins = torch.tensor([[-1.0, 3.0, -1.0], [-1.0, 3.0, 7.0]])
    valid = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    y = losses.n_step_safety_target(margins, valid, t(3.0, 2.0), t(1.0, 0.0), t(-2.0, -2.0), 0.5)
    assert y.tolist() == pytest.approx([1.0, 1.0])
    # one-step windows are exactly the one-step target
    one = losses.n_step_safety_target(margins[:, :1], valid[:, :1], t(1.0, 1.0), t(1.0, 0.0), t(0.5, 0.5), 0.9)
    assert one.tolist() == losses.safety_q_target(margins[:, 0], t(1.0, 0.0), t(0.5, 0.5), 0.9).tolist()


def test_gate_at_its_threshold_is_infeasible():
    """ζ = 1{Q_c < threshold}, strictly: an action exactly at the threshold is not feasible."""
    qc = torch.tensor([[0.0, -0.1, 0.2], [-0.3, -0.2, -0.5]])   # max over members: 0, -0.1, 0.2
    assert losses.feasibility_gate(qc).tolist() == [0.0, 1.0, 0.0]
    assert losses.feasibility_gate(qc, threshold=-0.1).tolist() == [0.0, 0.0, 0.0]


def test_reward_term_normalises_by_the_mean_magnitude_of_mixed_sign_q():
    """Q_r of both signs: mean |Q_r| = (2 + 6) / 2 = 4, while |mean Q_r| would be 2."""
    q_r = torch.tensor([2.0, -6.0])
    assert losses.actor_reward_term(q_r, normalize_q=True).tolist() == [-0.5, 1.5]
    assert losses.actor_reward_term(q_r, normalize_q=False).tolist() == [-2.0, 6.0]


# Checked against numpy on shapes where every axis has its own length, so a reduction over the
# wrong axis or a wrong broadcast cannot give the right number by accident.
MEMBERS, BATCH, ACT = 2, 3, 4


def _rand(*shape, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=shape)).float()


def test_ensemble_mse_against_numpy_with_a_nonzero_target():
    q, target = _rand(MEMBERS, BATCH), _rand(BATCH, seed=1)
    qn, tn = q.numpy(), target.numpy()
    expected = sum(np.mean([(qn[j, i] - tn[i]) ** 2 for i in range(BATCH)]) for j in range(MEMBERS))
    assert losses.ensemble_mse(q, target).item() == pytest.approx(expected, rel=1e-6)


def test_reward_value_loss_takes_the_min_over_members_against_numpy():
    q, v = _rand(MEMBERS, BATCH), _rand(BATCH, seed=1)
    u = q.numpy().min(axis=0) - v.numpy()
    expected = np.mean(np.abs(0.7 - (u < 0)) * u ** 2)
    assert losses.reward_value_loss(q, v, 0.7).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("loss", [losses.flow_matching_loss, losses.distillation_loss])
def test_action_losses_sum_over_the_action_and_average_over_the_batch(loss):
    """flow: |v − (a − z)|²; distillation: |μ − teacher|² (second argument 0 for flow)."""
    a, b = _rand(BATCH, ACT), _rand(BATCH, ACT, seed=1)
    args = (a, b, torch.zeros_like(b)) if loss is losses.flow_matching_loss else (a, b)
    d = a.numpy() + b.numpy() if loss is losses.flow_matching_loss else a.numpy() - b.numpy()
    expected = np.mean([np.sum(d[i] ** 2) for i in range(BATCH)])
    assert loss(*args).item() == pytest.approx(expected, rel=1e-6)


def test_reward_term_normalisation_below_one():
    """mean |Q_r| = 0.1 < 1: the division is by 0.1 (the clamp only guards against 0)."""
    q_r = torch.tensor([-0.05, 0.15])
    assert losses.actor_reward_term(q_r, normalize_q=True).tolist() == pytest.approx([0.5, -1.5])
    assert losses.actor_reward_term(torch.zeros(2), normalize_q=True).tolist() == [0.0, 0.0]


def test_actor_losses_normalise_q_by_default_and_report_their_ensembles():
    qr, qc = torch.tensor([[-4.0, -2.0], [-3.0, -6.0]]), torch.tensor([[-1.0, 1.0], [-2.0, 3.0]])
    distill = torch.tensor(0.0)
    for loss_fn, kwargs in [(losses.gated_actor_loss, {"safety_weight": 1.0}), (losses.lagrangian_actor_loss,
                                                                               {"eta": 1.0})]:
        loss, info = loss_fn(qr, qc, distill, 1.0, **kwargs)
        normalised, _ = loss_fn(qr, qc, distill, 1.0, normalize_q=True, **kwargs)
        assert loss.item() == normalised.item()
        assert info["actor_qr"].item() == pytest.approx(-5.0)   # mean of min over members [-4, -6]
        assert info["actor_qc"].item() == pytest.approx(1.0)    # mean of max over members [-1, 3]


def test_normalised_branches_divide_by_their_own_counts():
    """One feasible sample (its branch divides by 1) and two infeasible (they divide by 2)."""
    qr = torch.tensor([[-4.0, -1.0, -1.0]])
    qc = torch.tensor([[-1.0, 2.0, 4.0]])
    loss, _ = losses.gated_actor_loss(qr, qc, torch.tensor(0.0), 1.0, 1.0, normalize_q=False,
                                      normalized_branches=True)
    assert loss.item() == pytest.approx(4.0 + (2.0 + 4.0) / 2)


def test_n_step_reward_discounts_in_the_rewards_precision():
    rewards = torch.tensor([[1.0, 1.0, 1.0]], dtype=torch.float64)
    y = losses.n_step_reward_target(rewards, torch.ones_like(rewards), torch.tensor([3.0], dtype=torch.float64),
                                    torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64), 0.9)
    assert y.dtype == torch.float64 and y.item() == 1.0 + 0.9 + 0.9 ** 2   # exact in float64, not float32


def test_n_step_safety_target_ignores_the_padding_of_a_short_window():
    """A window cut after 2 steps without a terminal (mask 1): the padded third margin (7) is
    not backed up. Reference form, γ 0.5, margins [-1, -1], V' = -2: y1 = -1, y0 = -1."""
    margins, valid = torch.tensor([[-1.0, -1.0, 7.0]]), torch.tensor([[1.0, 1.0, 0.0]])
    y = losses.n_step_safety_target(margins, valid, t(2.0), t(1.0), t(-2.0), 0.5)
    assert y.tolist() == pytest.approx([-1.0])


def test_n_step_safety_target_uses_the_backup_it_is_given():
    """paper form, γ 0.5, margins [-1, -1], V' = -2: y1 = max(-1, .5 · -2) = -1,
    y0 = max(-1, .5 · -1) = -0.5 (the reference form gives -1)."""
    margins = torch.tensor([[-1.0, -1.0]])
    y = losses.n_step_safety_target(margins, torch.ones_like(margins), t(2.0), t(1.0), t(-2.0), 0.5, "paper")
    assert y.tolist() == pytest.approx([-0.5])


def test_the_reference_scope_divides_both_branches_by_mean_abs_q():
    """normalize_q_scope 'loss' (the reference code): the whole gated term over λ = mean |Q_r|,
    so its w_s acts like ours divided by λ; 'reward' (ours) leaves the safety branch at w_s."""
    qr = torch.tensor([[-10.0, -6.0, -2.0]])             # λ = 6
    qc = torch.tensor([[-1.0, -1.0, 3.0]])               # third infeasible: w_s · 3
    ours, _ = losses.gated_actor_loss(qr, qc, torch.tensor(0.0), 1.0, 12.0, normalize_q=True)
    ref, _ = losses.gated_actor_loss(qr, qc, torch.tensor(0.0), 1.0, 12.0, normalize_q=True,
                                     normalize_q_scope="loss")
    assert ours.item() == pytest.approx((10 / 6 + 1 + 12 * 3) / 3)
    assert ref.item() == pytest.approx((10 + 6 + 12 * 3) / 3 / 6)
    same, _ = losses.gated_actor_loss(qr, qc, torch.tensor(0.0), 1.0, 12.0 / 6, normalize_q=True)
    assert ref.item() == pytest.approx(same.item())      # the reference's w_s = ours · λ
    lag, _ = losses.lagrangian_actor_loss(qr, qc, torch.tensor(0.5), 2.0, 12.0, normalize_q=True,
                                          normalize_q_scope="loss")
    assert lag.item() == pytest.approx(2.0 * 0.5 + (10 + 6 + 2 + 12 * 3) / 3 / 6)


@pytest.mark.parametrize("loss", [losses.gated_actor_loss, losses.lagrangian_actor_loss])
def test_an_unknown_normalisation_scope_is_refused(loss):
    """A misspelt scope must not quietly train the 'reward' variant; the defaults are ours."""
    qr, qc, distill = torch.tensor([[-10.0, -6.0]]), torch.tensor([[-1.0, 3.0]]), torch.tensor(0.5)
    with pytest.raises(ValueError, match=r"normalize_q_scope must be one of \('reward', 'loss'\), got 'Reward'"):
        loss(qr, qc, distill, 1.0, 12.0, normalize_q=True, normalize_q_scope="Reward")
    default, _ = loss(qr, qc, distill, 1.0, 12.0, normalize_q=True)
    ours, _ = loss(qr, qc, distill, 1.0, 12.0, normalize_q=True, normalize_q_scope="reward")
    assert default.item() == ours.item()


def test_distillation_reduce_mean_is_the_sum_over_act_dim():
    student, teacher = torch.tensor([[0.5, 0.5], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    summed = losses.distillation_loss(student, teacher)                  # ((0.25 + 0.25) + 1) / 2
    mean = losses.distillation_loss(student, teacher, reduce="mean")     # (0.25 + 0.25 + 0 + 1) / 4
    assert summed.item() == pytest.approx(0.75) and mean.item() == pytest.approx(0.375)
    assert summed.item() == pytest.approx(2 * mean.item())               # α (sum) = α_ref (mean) / act_dim

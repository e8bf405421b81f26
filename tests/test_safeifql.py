"""The SafeIFQL baseline: its weighted flow loss and its weights against values computed by
hand, its choice among candidates, determinism for a seed, and fit -> evaluate through the CLI."""
import json
import math

import numpy as np
import pytest
import torch

from safefql_core import losses
from safefql_core.agent import euler_sample
from safefql_core.fisor import fisor_weights
from safefql_core.safeifql import SafeIFQLConfig, select_candidate
from safefql_core.training import TrainOptions, build_learner, load_run, resolve_config, train

TINY = {"critic_hidden": [16], "flow_hidden": [16], "batch_size": 32, "candidates": 4, "flow_steps": 2}


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


def test_weights_are_the_references_feasibility_gated_advantages():
    """Temperatures 5 (infeasible) and 3 (feasible), clips 150 and 100: the reference's safeifql settings."""
    cfg = SafeIFQLConfig()
    qr, vr = t(0.0, 1.0, 1.0, 0.0, 9.0), t(0.0, 0.5, 0.0, 0.0, 0.0)
    qc, vc = t(0.1, -0.2, 0.3, -2.0, -1.0), t(0.4, -0.1, -0.1, 0.2, -0.5)
    w = fisor_weights(qr, vr, qc, vc, cfg).tolist()
    assert w[0] == pytest.approx(math.exp(5 * 0.3))      # infeasible state: exp(5 (V_c - Q_c)), lower risk preferred
    assert w[1] == pytest.approx(math.exp(3 * 0.5))      # feasible state, Q_c <= 0: exp(3 (Q_r - V_r))
    assert w[2] == 0.0                                   # feasible state, unsafe action: dropped
    assert w[3] == pytest.approx(150.0)                  # exp(5 * 2.2) = 59874 clipped at 150
    assert w[4] == pytest.approx(100.0)                  # exp(27) clipped at 100


def test_weighted_flow_loss_scales_each_samples_error():
    # errors |v - (a - z)|^2 summed over the action: [1 + 0, 0 + 4] = [1, 4]; weights [2, 0.5]
    velocity, noise, actions = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.zeros(2, 2), torch.zeros(2, 2)
    assert losses.flow_matching_loss(velocity, noise, actions, t(2.0, 0.5)).item() == pytest.approx((2 + 2) / 2)
    assert losses.flow_matching_loss(velocity, noise, actions).item() == pytest.approx((1 + 4) / 2)
    assert losses.flow_matching_loss(velocity, noise, actions, t(0.0, 0.0)).item() == 0.0


def test_choice_is_the_best_feasible_reward_else_the_safest():
    q_reward = torch.tensor([[1.0, 9.0, 3.0, 2.0],     # the highest Q_r (9) is infeasible: 3 wins
                             [5.0, 1.0, 2.0, 0.0],     # none feasible (0.0 is not < 0): the lowest Q_safe
                             [0.0, 0.0, 7.0, 1.0]])    # one feasible
    q_safe = torch.tensor([[-1.0, 0.2, -0.5, -0.1],
                           [0.3, 0.1, 0.2, 0.0],
                           [0.5, 0.4, 0.3, -0.01]])
    assert select_candidate(q_reward, q_safe).tolist() == [2, 3, 3]
    # a threshold of 0.35 admits row 0's 9 and row 1's 5
    assert select_candidate(q_reward, q_safe, threshold=0.35).tolist() == [1, 0, 2]


def _learner(seed=0):
    torch.manual_seed(seed)
    return build_learner("safeifql", resolve_config("safeifql", TINY), 2, 2, np.zeros(2), np.ones(2)).eval()


def test_act_sends_the_candidate_the_rule_picks():
    learner, obs = _learner(), torch.tensor([[0.2, -0.3], [-1.0, 1.0], [1.4, 0.0]])
    torch.manual_seed(7)
    sent = learner.act(obs)
    torch.manual_seed(7)   # the same draws, the candidates rebuilt and chosen here by the rule in numpy
    c = learner.cfg.candidates
    obs_n = learner.normalizer(obs).repeat_interleave(c, dim=0)
    with torch.no_grad():
        cands = euler_sample(learner.flow_target, obs_n, torch.randn(len(obs) * c, 2), learner.cfg.flow_steps)
        q = learner.q_all_target(obs_n, cands).numpy()
    q_r, q_c = q[:2].min(axis=0).reshape(-1, c), q[2:].max(axis=0).reshape(-1, c)
    cands = cands.numpy().reshape(-1, c, 2)
    for i in range(len(obs)):
        ok = q_c[i] < 0
        pick = int(np.flatnonzero(ok)[np.argmax(q_r[i][ok])]) if ok.any() else int(np.argmin(q_c[i]))
        assert np.array_equal(sent[i].numpy(), cands[i, pick])
    with pytest.raises(ValueError, match="draws its own candidate noise"):
        learner.act(obs, torch.zeros(3, 2))


def test_same_seed_same_weights_and_actions(tiny_boat_h5, tmp_path):
    runs = [train(TrainOptions(data=tiny_boat_h5, out=str(tmp_path / name), algo="safeifql", seed=seed,
                               overrides={**TINY, "steps": 15}, progress=False, log_every=5))
            for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    learners = [load_run(run)[0] for run in runs]
    states = [learner.state_dict() for learner in learners]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])
    assert not torch.equal(states[0]["flow_target.mlp.net.0.weight"], states[0]["flow.mlp.net.0.weight"])
    assert "mean_weight" in (runs[0] / "metrics.csv").read_text().splitlines()[0]
    obs = torch.tensor([[0.0, 0.5], [-2.0, -1.0]])
    actions = []
    for _ in range(2):
        torch.manual_seed(3)
        actions.append(learners[0].act(obs))
    assert torch.equal(*actions)


def test_fit_then_evaluate_through_the_cli(tiny_boat_h5, tmp_path, capsys):
    from offline_train import evaluate, export, fit
    run = tmp_path / "run"
    assert fit.main(["--data", tiny_boat_h5, "--algo", "safeifql", "--out", str(run), "--steps", "10",
                     "--no-progress", "--set", *(f"{k}={json.dumps(v)}" for k, v in TINY.items())]) == 0
    out = tmp_path / "eval.json"
    assert evaluate.main(["--run", str(run), "--init-states", "validation", "--episodes", "3", "--steps", "20",
                          "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["algo"] == "safeifql" and summary["count"] == 3 and math.isfinite(summary["mean_return"])
    assert evaluate.main(["--run", str(run), "--episodes", "3", "--noise", "sample"]) == 2
    assert "draws its own candidate noise" in capsys.readouterr().err
    assert export.main(["--run", str(run), "--out", str(tmp_path / "bundle")]) == 2
    assert "no deployable bundle" in capsys.readouterr().err

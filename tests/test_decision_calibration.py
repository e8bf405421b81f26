"""δ* is calibrated on the decision that is deployed: rollouts through `Runtime.decide` (real
ONNX graphs of the tiny bundle), the fixed point over δ, and the record export turns into the
bundle's decision."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from offline_train import calibrate, export
from safefql_core.bundle import load_bundle
from safefql_core.decision_calibration import MAX_ROUNDS, calibrate_decision, deployed_outcomes
from safefql_core.envs import boat
from safefql_core.evaluation import max_margins
from safefql_core.pipeline import calibrate as calibration_step
from safefql_core.pipeline.files import CALIBRATION_FILE
from safefql_core.runtime import Runtime, RuntimeConfig
from safefql_core.training import load_run

STEPS = 40


@pytest.fixture(scope="module")
def states() -> np.ndarray:
    return boat.sample_safe_states(np.random.default_rng(7), 24)


def test_outcomes_are_those_of_the_deployed_decision(bundle, states):
    """y is the max margin of a closed loop of decide() (stepped here by hand), V̂ the Q_safe of
    the first action decide() sends; with 4 proposals that is not the raw z = 0 actor's."""
    b = load_bundle(bundle)
    decision = b.decision.with_changes(proposals=4, candidates=2)
    y, v_hat = deployed_outcomes(b, decision, 0.0, states, STEPS, 3, max_margins)
    runtime = Runtime(b, RuntimeConfig(decision=decision, override_decision=True, threshold=0.0, seed=3))
    env = boat.BoatEnv(len(states), episode_steps=STEPS)
    obs, worst, first = env.reset(states), np.full(len(states), -np.inf), None
    for _ in range(STEPS):
        decisions = [runtime.decide(o) for o in obs]
        first = np.array([d.q_safe for d in decisions]) if first is None else first
        obs, *_, info = env.step(np.stack([d.action for d in decisions]))
        worst = np.maximum(worst, info["margin"])
    np.testing.assert_array_equal(y, worst)
    np.testing.assert_array_equal(v_hat, first)
    learner, _ = load_run(Path(bundle).parent / "run")
    with torch.no_grad():
        o = torch.as_tensor(states, dtype=torch.float32)
        raw = learner.safety(o, learner.act(o))[0].numpy()
    assert np.abs(v_hat - raw).max() > 1e-3   # the proposals chose other actions than z = 0


@pytest.mark.parametrize("quantile, grid", [(0.5, 0.02), (0.3, 0.01)])
def test_the_fixed_point_is_recorded_and_reproduces(bundle, states, quantile, grid):
    """Each round fits δ to rollouts at the previous δ (the first at 0); it stops when δ repeats
    (converged) or after MAX_ROUNDS; the last round reproduces from its own threshold. The fit
    here is a quantile of V̂ on a grid: one that moves δ, so that the rounds are exercised (the
    tiny policy violates nothing in 40 ticks, and the beta method then keeps δ = 0)."""
    b = load_bundle(bundle)
    decision = b.decision.with_changes(proposals=4)
    fit = lambda y, v: {"delta": float(np.round(np.quantile(v, quantile) / grid) * grid)}  # noqa: E731
    out = calibrate_decision(b, decision, fit, states, STEPS, 1, max_margins)
    rounds = out["rounds"]
    assert 2 <= len(rounds) <= MAX_ROUNDS and rounds[0]["rolled_out_at"] == 0.0
    assert all(a["delta"] == b_["rolled_out_at"] for a, b_ in zip(rounds, rounds[1:]))
    assert out["converged"] == (rounds[-1]["delta"] == rounds[-1]["rolled_out_at"])
    assert out["converged"] or len(rounds) == MAX_ROUNDS
    y, v = deployed_outcomes(b, decision, rounds[-1]["rolled_out_at"], states, STEPS, 1, max_margins)
    assert fit(y, v)["delta"] == out["fit"]["delta"] == rounds[-1]["delta"]
    np.testing.assert_array_equal(v, out["v_hat"])


def test_calibrate_records_the_decision_and_export_deploys_it(bundle, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(Path(bundle).parent / "run", run)
    (run / CALIBRATION_FILE).unlink(missing_ok=True)
    args = ["--run", str(run), "--n", "20", "--horizon", str(STEPS), "--proposals", "4", "--candidates", "2",
            "--stop-action", "0.25", "-0.5", "--fallback-actions", "1", "0", "0", "-1"]
    assert calibrate.main([*args[:-8], "--stop-action", "0.25"]) == 2   # one value for a 2-field command
    assert "the decision to calibrate: stop_action must be" in capsys.readouterr().err
    assert calibrate.main(args) == 0
    printed = capsys.readouterr().out
    result = json.loads((run / CALIBRATION_FILE).read_text())
    assert result["source"] == calibration_step.SIMULATED
    assert (result["decision"]["proposals"], result["decision"]["candidates"]) == (4, 2)
    assert result["decision"]["stop_action"] == [0.25, -0.5]
    assert result["decision"]["fallback_actions"] == [[1.0, 0.0], [0.0, -1.0]]
    assert result["fixed_point"]["rounds"][0]["rolled_out_at"] == 0.0
    assert "decision certified: 4 proposal(s)" in printed and "fixed point:" in printed
    assert export.main(["--run", str(run), "--out", str(tmp_path / "bundle")]) == 0
    b = load_bundle(tmp_path / "bundle")
    assert b.decision.to_dict() == result["decision"] and b.certified_decision == b.decision
    assert b.threshold == result["delta"]
    assert Runtime(b).warnings == []
    # the single-proposal decision is not what δ* certifies: refused, or run with a warning
    single = b.decision.with_changes(proposals=1)
    with pytest.raises(ValueError, match=r"differs from the bundle's in \['proposals'\]"):
        Runtime(b, RuntimeConfig(decision=single))
    warned = Runtime(b, RuntimeConfig(decision=single, override_decision=True)).warnings
    assert len(warned) == 2 and "calibrated on another decision" in warned[1]
    card = (tmp_path / "bundle" / "MODEL_CARD.md").read_text()
    assert "It certifies the decision below" in card and b.decision.describe() in card

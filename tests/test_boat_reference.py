"""Ground-truth boat references (safefql_core/envs/boat_reference.py).

The grid solutions are cached per process, so the first test pays ~7 s and the rest reuse
them; the random-state fixtures are module-scoped for the same reason.
"""
import json

import numpy as np
import pytest

from offline_train import reference as cli
from safefql_core.envs import boat_reference as br
from safefql_core.envs.boat import EPISODE_STEPS, GOAL, BoatEnv, sample_safe_states

# Just left of the upper disc (centre (-0.5, 0.5), r 0.4) on its centre line: the current
# (1.875 along +x) closes the 0.05 gap in ~0.05 s, far too soon to dodge 0.4 sideways.
DOOMED = np.array([[-0.95, 0.5]])
OPEN_WATER = np.array([[1.0, -1.5], [-2.5, 0.0], GOAL])


@pytest.fixture(scope="module")
def random_states() -> np.ndarray:
    return sample_safe_states(np.random.default_rng(7), 50)


@pytest.fixture(scope="module")
def report(random_states):
    return br.feasibility_report(random_states)


@pytest.fixture(scope="module")
def reference(random_states):
    return br.optimal_reference(random_states)


def episode_cost(initial_states: np.ndarray, controller: br.Controller) -> np.ndarray:
    """Violating steps of one controller, stepped by hand (independent of br.rollout)."""
    env = BoatEnv(num_envs=len(initial_states))
    obs = env.reset(initial_states)
    total = np.zeros(len(initial_states))
    for t in range(EPISODE_STEPS):
        obs, _, cost, *_ = env.step(controller(obs, t))
        total += cost
    return total


def test_state_in_front_of_disc_is_doomed():
    rep = br.feasibility_report(DOOMED)
    assert not rep["feasible"][0]
    assert rep["certificate"][0] == ""
    assert rep["value"][0] <= 0  # the reachability value agrees: no safe path exists


def test_open_water_and_goal_are_feasible():
    rep = br.feasibility_report(OPEN_WATER)
    assert rep["feasible"].all()
    assert (rep["value"] > 0).all()


def test_feasible_mask_matches_report(random_states, report):
    np.testing.assert_array_equal(br.feasible_mask(random_states), report["feasible"])


def test_certificates_replay_without_violations(random_states, report):
    controllers = br.candidates()  # fresh (stateful) grid controllers
    feasible = np.flatnonzero(report["feasible"])
    assert len(feasible) > 40  # most random safe states are not doomed
    for name in set(report["certificate"][feasible]):
        rows = feasible[report["certificate"][feasible] == name]
        assert (episode_cost(random_states[rows], controllers[name]) == 0).all(), name


def test_search_agrees_with_reachability_value(report):
    # Measured: no disagreement on 3000 random safe states (a few near |value| < 0.01).
    np.testing.assert_array_equal(report["feasible"], report["value"] > 0)


def test_reference_is_certified_and_consistent(report, reference):
    np.testing.assert_array_equal(reference["feasible"], report["feasible"])
    assert (reference["violations"][reference["feasible"]] == 0).all()
    assert (reference["violations"][~reference["feasible"]] > 0).all()
    straight_safe = reference["straight_violations"] == 0
    assert (reference["returns"][straight_safe]
            >= reference["straight_returns"][straight_safe] - 1e-9).all()


def test_reward_greedy_alone_beats_straight_to_goal(random_states):
    """The DP controller by itself (not the max over candidates) is safe and at least as
    good as heading at the goal wherever the latter is safe."""
    out = br.rollout(random_states, {"dp": br.reward_controller(0.0),
                                     "straight": br.straight_to_goal})
    straight_safe = out.violations[1] == 0
    assert (out.violations[0][straight_safe] == 0).all()
    assert (out.returns[0][straight_safe] >= out.returns[1][straight_safe] - 0.5).all()


def test_certified_return_realises_grid_value(reference):
    """The greedy rollout achieves what the DP promises: the grid value may fall far below
    it (penalty leaking along paths that graze an obstacle) but never far above, and
    typically matches within a unit."""
    feasible = reference["feasible"]
    gap = reference["grid_return"][feasible] - reference["returns"][feasible]
    assert gap.max() < 5.0
    assert np.median(np.abs(gap)) < 1.0


def test_cli_rejects_other_tasks():
    with pytest.raises(SystemExit) as exc:
        cli.main(["--task", "ant"])
    assert exc.value.code == 2


def test_cli_writes_summary(tmp_path):
    states = np.concatenate([DOOMED, OPEN_WATER])
    np.save(tmp_path / "states.npy", states)
    out = tmp_path / "ref.json"
    assert cli.main(["--task", "boat", "--init-states", str(tmp_path / "states.npy"),
                     "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["count"] == 4
    assert summary["doomed_indices"] == [0]
    assert summary["value_search_disagreements"] == 0
    assert summary["straight_violation_rate"] == 0.25  # only the doomed state violates


def test_cli_takes_the_named_sets_and_defaults_to_the_test_set(capsys):
    from safefql_core.envs import boat
    for argv, name in (([], "test"), (["--init-states", "validation"], "validation")):
        states, source = cli.load_states(cli.parse_args(["--task", "boat", *argv]))
        np.testing.assert_array_equal(states, boat.initial_states(name))
        assert source == name
    assert cli.main(["--task", "boat", "--init-states", "nope"]) == 2
    err = capsys.readouterr().err
    assert "--init-states nope: no such file; give a named set (validation, test, evaluation)" in err

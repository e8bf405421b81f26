"""The boat simulator matches SAFEFQL.md's task definition."""
import numpy as np
import pytest

from safefql_core.envs import boat


def test_margin_sign_and_value():
    # at a disc centre l = r (inside, positive); on the boundary 0; far away negative
    assert boat.margin(np.array([-0.5, 0.5])) == pytest.approx(0.4)
    assert boat.margin(np.array([-0.5, 0.9])) == pytest.approx(0.0, abs=1e-12)
    assert boat.margin(np.array([1.5, 0.0])) < -1.0


def test_dynamics_euler_step_with_current():
    s = np.array([[0.0, 1.0]])
    # heading (0, 3) renormalises to (0, 1); current 2 - 0.5 * 1 = 1.5 along x
    nxt = boat.dynamics(s, np.array([[0.0, 3.0]]))
    assert nxt == pytest.approx(np.array([[0.0075, 1.005]]))


def test_zero_action_drifts_with_current_and_box_clips():
    nxt = boat.dynamics(np.array([[2.0, 0.0], [0.0, 0.0]]), np.zeros((2, 2)))
    assert nxt == pytest.approx(np.array([[2.0, 0.0], [0.01, 0.0]]))


def test_step_reports_pre_step_reward_cost_and_margin():
    env = boat.BoatEnv(2)
    start = np.array([[-0.5, 0.5], [1.5, 0.0]])
    env.reset(start)
    _, rew, cost, term, trunc, info = env.step(np.ones((2, 2)))
    assert cost.tolist() == [1.0, 0.0]
    assert rew == pytest.approx(-np.linalg.norm(start - boat.GOAL, axis=1))
    assert info["margin"] == pytest.approx(boat.margin(start))
    assert info["cost"].tolist() == cost.tolist()
    assert not term.any() and not trunc.any()


def test_episode_times_out_after_400_steps():
    env = boat.BoatEnv(1)
    env.reset(np.array([[1.0, 1.0]]))
    for _ in range(boat.EPISODE_STEPS - 1):
        assert not env.step(np.zeros((1, 2)))[4].any()
    assert env.step(np.zeros((1, 2)))[4].all()


def test_reset_rejects_wrong_count():
    with pytest.raises(ValueError, match="one \\(x, y\\) row per boat"):
        boat.BoatEnv(3).reset(np.zeros((2, 2)))


@pytest.mark.parametrize("name", sorted(boat.STATE_SETS))
def test_initial_state_sets_are_fixed_safe_and_reproducible(name):
    states = boat.initial_states(name)
    assert states.shape == (boat.STATE_SETS[name].size, 2)
    assert (boat.margin(states) < 0).all()
    assert ((states >= boat.LOW) & (states <= boat.HIGH)).all()
    np.testing.assert_array_equal(states, boat.generate_initial_states(name))


def test_initial_state_sets_are_disjoint_and_the_test_set_is_large():
    sets = {name: boat.initial_states(name) for name in boat.STATE_SETS}
    assert len(sets["test"]) >= 1000
    assert len({spec.seed for spec in boat.STATE_SETS.values()}) == len(sets)
    names = sorted(sets)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            gap = np.linalg.norm(sets[a][:, None] - sets[b][None], axis=-1).min()
            assert gap > 0, f"{a} and {b} share a state"
    np.testing.assert_array_equal(boat.evaluation_states(), sets["evaluation"])
    with pytest.raises(ValueError, match="choose one of validation, test, evaluation"):
        boat.initial_states("train")


def test_sampled_safe_states_respect_clearance():
    s = boat.sample_safe_states(np.random.default_rng(0), 1000, min_clearance=0.1)
    assert (boat.margin(s) < -0.1).all()


def test_goal_region_and_rollout_length():
    from safefql_core.evaluation import rollout
    assert boat.reached_goal(np.array([[0.0, 0.0], [2.0, 0.1]]))  # pinned at the east wall: reached
    assert not boat.reached_goal(np.array([[0.0, 0.0], [1.5, 0.7]]))
    # Drifting with the current from (0, 0): x grows by 2 dt per step, so the boat is within
    # 0.6 of (1.5, 0) after (1.5 - 0.6) / (2 * 0.005) = 90 steps, not before.
    stop = lambda obs: np.zeros_like(obs)  # noqa: E731
    short, long = (rollout(stop, np.zeros((1, 2)), steps=n) for n in (89, 91))
    assert not short["goal_reached"][0] and long["goal_reached"][0]
    assert boat.BoatEnv(episode_steps=3).reset().shape == (1, 2)

"""DSRL's normalisation: the published reference returns, and the cost budget."""
import numpy as np
import pytest

from safefql_core.envs import dsrl


def test_normalized_reward_maps_the_reference_range_to_0_1():
    ref = dsrl.reference("SafetyPointCircle1-v0")
    np.testing.assert_allclose(dsrl.normalized_reward([ref.min_return, ref.max_return], "SafetyPointCircle1-v0"),
                               [0.0, 1.0])
    mid = (ref.min_return + ref.max_return) / 2
    assert dsrl.normalized_reward(mid, "SafetyPointCircle1-v0") == pytest.approx(0.5)


def test_normalized_cost_is_cost_over_budget_and_refuses_a_bad_budget():
    np.testing.assert_allclose(dsrl.normalized_cost([0.0, 10.0, 25.0], 10.0), [0.0, 1.0, 2.5])
    with pytest.raises(ValueError, match="positive"):
        dsrl.normalized_cost(1.0, 0.0)


def test_unknown_task_names_the_known_ones():
    with pytest.raises(KeyError, match="SafetyPointGoal1-v0"):
        dsrl.reference("SafetyCarGoal9-v0")


def test_budgets_include_fisors_and_dsrls():
    assert dsrl.HEADLINE_BUDGET == 10.0 and {20.0, 40.0, 80.0} <= set(dsrl.BUDGETS)

"""Safety Gymnasium: the Python 3.11 import shim, the adapter, the margin convention, and a
tiny scripted collection through the CLI that load_dataset accepts (kept to a few hundred
env steps: the machine is shared)."""
import dataclasses
import importlib.util
import sys

import numpy as np
import pytest

if importlib.util.find_spec("safety_gymnasium") is None:  # importorskip would hit the 3.11 crash
    pytest.skip("safety-gymnasium (optional) is not installed", allow_module_level=True)

from offline_train import collect  # noqa: E402
from safefql_core.data import fingerprint, load_dataset  # noqa: E402
from safefql_core.envs import safety_gym, safety_gym_behaviour  # noqa: E402

TASKS = {"SafetyPointCircle1-v0": 28, "SafetyPointGoal1-v0": 60}


def test_shim_imports_and_gives_each_instance_its_own_array():
    original = dataclasses._process_class
    sg = safety_gym.import_safety_gymnasium()
    assert dataclasses._process_class is original          # patched only while importing
    from safety_gymnasium.assets.geoms import Goal
    a, b = Goal(), Goal()
    np.testing.assert_array_equal(a.color, b.color)
    assert a.color is not b.color                             # default_factory copies
    assert callable(sg.make)


def test_missing_package_names_the_fix(monkeypatch, tmp_path, capsys):
    monkeypatch.delitem(sys.modules, "safety_gymnasium", raising=False)
    monkeypatch.setattr(safety_gym.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install --no-deps safety-gymnasium==1.0.0"):
        safety_gym.import_safety_gymnasium()
    assert collect.main(["--task", "SafetyPointGoal1-v0", "--out", str(tmp_path / "x.h5")]) == 2
    assert "pip install" in capsys.readouterr().err


@pytest.mark.parametrize("task_id", TASKS)
def test_adapter_steps_with_flat_obs_and_six_tuples(task_id):
    env = safety_gym.make_env(task_id, seed=0, max_episode_steps=5)
    assert (env.obs_dim, env.act_dim) == (TASKS[task_id], 2)
    np.testing.assert_array_equal(env.action_low, [-1, -1])
    np.testing.assert_array_equal(env.action_high, [1, 1])
    obs = env.reset()
    assert obs.shape == (env.obs_dim,) and obs.dtype == np.float32
    for t in range(5):
        obs, reward, cost, terminated, truncated, info = env.step(np.array([2.0, -0.3]))  # clipped
        assert obs.shape == (env.obs_dim,) and isinstance(reward, float) and cost in (0.0, 1.0)
        assert truncated == (t == 4) and not terminated
    np.testing.assert_array_equal(env.reset(seed=3), env.reset(seed=3))
    env.close()


def test_unknown_task_is_refused_with_examples():
    with pytest.raises(ValueError, match="SafetyPointGoal1-v0"):
        safety_gym.make_env("SafetyPointNope9-v0", seed=0)


def test_margin_convention():
    np.testing.assert_array_equal(safety_gym.margin_from_cost(np.array([0.0, 1.0, 0.0])), [-1.0, 25.0, -1.0])
    assert safety_gym.margin_from_cost(1.0, cost_scale=5.0) == 5.0


def test_lidar_decoding_matches_the_true_goal_position():
    """The documented observation layout: the goal lidar gives its ego bearing and distance."""
    env = safety_gym.make_env("SafetyPointGoal1-v0", seed=0)
    obs = env.reset(seed=3)
    goal = env.task._ego_xy(env.task.goal.pos[:2])
    bearing, dist = safety_gym_behaviour.lidar_target(obs[safety_gym_behaviour.GOAL_LIDAR], max_dist=3.0)
    assert bearing == pytest.approx(np.arctan2(goal[1], goal[0]), abs=1e-3)
    assert dist == pytest.approx(np.linalg.norm(goal), abs=1e-3)
    env.close()


def test_collect_cli_writes_a_valid_deterministic_dataset(tmp_path, capsys):
    # seed 1 draws the families reward, random, inner: costly and safe steps in 3 x 80 steps
    argv = ["--task", "SafetyPointCircle1-v0", "--seed", "1", "--episodes", "3",
            "--max-episode-steps", "80", "--no-progress"]
    assert collect.main(argv + ["--out", str(tmp_path / "a.h5")]) == 0
    assert "episodes per family" in capsys.readouterr().out
    data = load_dataset(tmp_path / "a.h5")
    assert len(data) == 240 and data.obs_dim == 28 and data.act_dim == 2
    assert data.timeouts.sum() == 3 and data.timeouts[79] == 1 and data.terminals.sum() == 0
    assert 0 < data.costs.sum() < len(data)                  # both safe and costly transitions
    np.testing.assert_array_equal(data.margins, np.where(data.costs > 0, 25.0, -1.0))
    np.testing.assert_array_equal(data.observations[1:80], data.next_observations[:79])
    assert data.attrs["task"] == "SafetyPointCircle1-v0"
    assert data.attrs["behaviour_mix"] == safety_gym_behaviour.mix("SafetyPointCircle1-v0")
    assert collect.main(argv + ["--out", str(tmp_path / "b.h5")]) == 0
    assert fingerprint(load_dataset(tmp_path / "b.h5")) == fingerprint(data)

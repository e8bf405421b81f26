"""Safety Gymnasium: the Python 3.11 import shim, the adapter, the margin convention, and a
tiny scripted collection through the CLI that load_dataset accepts (kept to a few hundred
env steps: the machine is shared)."""
import dataclasses
import importlib.util
import sys

import numpy as np
import pytest
import torch

if importlib.util.find_spec("safety_gymnasium") is None:  # importorskip would hit the 3.11 crash
    pytest.skip("safety-gymnasium (optional) is not installed", allow_module_level=True)

from offline_train import collect  # noqa: E402
from safefql_core.bundle import load_bundle  # noqa: E402
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


def test_resets_compile_without_the_skybox_and_change_nothing_else():
    """The skybox-free compile is render-only: same seed, same episode as a stock reset."""
    def rollout(env, reset):
        obs = [reset()]
        for _ in range(20):
            obs.append(env.step(np.array([0.6, -0.4]))[0])
        return np.stack(obs)

    env = safety_gym.make_env("SafetyPointGoal1-v0", seed=0, max_episode_steps=20)
    fast = rollout(env, lambda: env.reset(seed=7))
    assert env.task.world.model.ntex == 1              # the floor's; no skybox
    stock = rollout(env, lambda: np.asarray(env.env.reset(seed=7)[0], np.float32))  # unpatched
    assert env.task.world.model.ntex == 2
    np.testing.assert_array_equal(fast, stock)
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
    np.testing.assert_array_equal(data.margins > 0, data.costs > 0)   # the distance margin (default here)
    assert len(np.unique(data.margins)) > 100 and "signed distance" in data.attrs["margin"]
    np.testing.assert_array_equal(data.observations[1:80], data.next_observations[:79])
    assert data.attrs["task"] == "SafetyPointCircle1-v0"
    mix = safety_gym_behaviour.MIXES["SafetyPointCircle1-v0"]
    assert data.attrs["behaviour_mix"] == safety_gym_behaviour.shares(mix)
    assert collect.main(argv + ["--out", str(tmp_path / "b.h5")]) == 0
    assert fingerprint(load_dataset(tmp_path / "b.h5")) == fingerprint(data)


def test_hold_sums_k_steps_keeps_the_largest_margin_and_stops_at_the_end():
    env = safety_gym.make_env("SafetyPointGoal1-v0", seed=0, max_episode_steps=7)
    action = np.array([0.8, 0.3])
    env.reset(seed=5)
    steps = [env.step(action) for _ in range(7)]
    env.reset(seed=5)
    first, second = env.hold(action, 5), env.hold(action, 5)
    np.testing.assert_array_equal(first[0], steps[4][0])
    assert first[1] == pytest.approx(sum(s[1] for s in steps[:5])) and first[2] == sum(s[2] for s in steps[:5])
    assert first[5]["margin"] == max(s[5]["margin"] for s in steps[:5]) and first[6] == 5
    assert not first[4] and second[4] and second[6] == 2           # the episode ends after 2 more
    np.testing.assert_array_equal(second[0], steps[6][0])
    env.close()


def test_collect_with_action_repeat_stores_one_transition_per_decision(tmp_path, capsys):
    argv = ["--task", "SafetyPointCircle1-v0", "--seed", "1", "--episodes", "3", "--max-episode-steps", "80",
            "--no-progress", "--action-repeat", "4", "--out", str(tmp_path / "k4.h5")]
    assert collect.main(argv) == 0
    assert "one per 4 steps" in capsys.readouterr().out
    data = load_dataset(tmp_path / "k4.h5")
    assert len(data) == 60 and data.timeouts.sum() == 3 and data.timeouts[19] == 1
    assert data.attrs["action_repeat"] == 4
    assert set(np.unique(data.costs)) <= {0, 1, 2, 3, 4} and data.costs.max() > 1   # summed over 4 steps
    np.testing.assert_array_equal(data.margins > 0, data.costs > 0)
    with pytest.raises(SystemExit):   # the boat's data is its 200 Hz control loop as is
        collect.main(["--task", "boat", "--episodes", "1", "--action-repeat", "2", "--out", str(tmp_path / "b.h5")])
    assert "--action-repeat only apply to Safety Gymnasium" in capsys.readouterr().err


def test_collect_margin_cost_stores_the_dsrl_convention_and_distance_needs_geometry(tmp_path, capsys):
    argv = ["--task", "SafetyPointCircle1-v0", "--seed", "1", "--episodes", "3", "--max-episode-steps", "80",
            "--no-progress"]
    assert collect.main(argv + ["--margin", "cost", "--out", str(tmp_path / "c.h5")]) == 0
    data = load_dataset(tmp_path / "c.h5")
    assert data.costs.sum() > 0
    np.testing.assert_array_equal(data.margins, np.where(data.costs > 0, 25.0, -1.0))
    capsys.readouterr()
    assert collect.main(["--task", "SafetyHalfCheetahVelocity-v1", "--margin", "distance", "--episodes", "1",
                         "--out", str(tmp_path / "hc.h5")]) == 2
    assert "--margin cost" in capsys.readouterr().err
    assert not (tmp_path / "hc.h5").exists()


@pytest.mark.parametrize("task_id, policy", [
    ("SafetyPointGoal1-v0", safety_gym_behaviour.nearest_hazard),        # drives into a hazard disc
    ("SafetyPointCircle1-v0", lambda obs: np.array([1.0, 0.0])),         # drives straight through a wall
])
def test_geometric_margin_is_the_distance_to_the_failure_set(task_id, policy):
    """info["margin"] is positive exactly on the steps the task charges a cost, and varies
    continuously (a step moves the robot a few cm, so the margin a few cm)."""
    env = safety_gym.make_env(task_id, seed=0, max_episode_steps=300)
    assert env.has_geometric_margin
    obs, margins, costs = env.reset(seed=2), [], []
    for _ in range(300):
        obs, _, cost, _, _, info = env.step(policy(obs))
        margins.append(info["margin"])
        costs.append(cost)
    margins, costs = np.array(margins), np.array(costs)
    assert 0 < costs.sum() < len(costs)
    np.testing.assert_array_equal(margins > 0, costs > 0)
    assert np.abs(np.diff(margins)).max() < 0.1
    env.close()


@pytest.fixture(scope="module")
def tiny_circle(tmp_path_factory) -> str:
    """3 x 80 steps of the Circle mix (seed 1: costly and safe families)."""
    path = tmp_path_factory.mktemp("circle") / "circle.h5"
    assert collect.main(["--task", "SafetyPointCircle1-v0", "--seed", "1", "--episodes", "3",
                         "--max-episode-steps", "80", "--no-progress", "--out", str(path)]) == 0
    return str(path)


TINY_SET = ["--set", "critic_hidden=[32,32]", "flow_hidden=[32,32]", "batch_size=64", "flow_steps=3"]


def test_fit_task_trains_with_the_task_config_and_evaluate_normalises(tiny_circle, tmp_path, capsys):
    from offline_train import evaluate, fit
    from safefql_core.envs import dsrl
    from safefql_core.training import load_run
    run = tmp_path / "run"
    assert fit.main(["--task", "SafetyPointCircle1-v0", "--data", tiny_circle, "--out", str(run),
                     "--steps", "20", "--no-progress", *TINY_SET]) == 0
    _, meta = load_run(run)
    assert meta["task"] == "SafetyPointCircle1-v0"
    assert meta["config"]["gate_threshold"] == 0.0 and meta["config"]["alpha"] == 10.0  # from the task's YAML
    assert meta["config"]["critic_hidden"] == [32, 32]                                 # --set on top of it
    out = tmp_path / "eval.json"
    assert evaluate.main(["--run", str(run), "--episodes", "2", "--steps", "30", "--json", str(out)]) == 0
    assert "normalized reward" in capsys.readouterr().out
    summary = __import__("json").loads(out.read_text())
    assert summary["task"] == "SafetyPointCircle1-v0" and summary["count"] == 2
    returns, costs = np.array(summary["returns"]), np.array(summary["costs"])
    assert summary["mean_violations"] == pytest.approx(costs.mean())
    assert summary["normalized_reward"]["mean"] == pytest.approx(
        dsrl.normalized_reward(returns, "SafetyPointCircle1-v0").mean())
    for budget in ("10", "20", "40", "80"):
        assert summary["normalized_cost_by_budget"][budget]["mean"] == pytest.approx(costs.mean() / float(budget))
    assert summary["normalized_cost"] == summary["normalized_cost_by_budget"]["10"]
    # same seed, same episodes, whatever thread count the calling process had set: evaluate
    # fixes its own (fit's default 1), since summation order can change a long rollout
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert evaluate.main(["--run", str(run), "--episodes", "2", "--steps", "30",
                              "--json", str(tmp_path / "b.json")]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert __import__("json").loads((tmp_path / "b.json").read_text())["returns"] == summary["returns"]


def test_evaluate_runs_the_deployed_decision_of_a_safety_gym_bundle(tiny_circle, tmp_path, capsys):
    """The bundle path with a 2-d action and a 28-d observation (the boat has 2 and 2)."""
    import json

    from offline_train import evaluate, export, fit
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    assert fit.main(["--task", "SafetyPointCircle1-v0", "--data", tiny_circle, "--out", str(run),
                     "--steps", "10", "--no-progress", *TINY_SET]) == 0
    assert export.main(["--run", str(run), "--out", str(bundle)]) == 0
    out = tmp_path / "eval.json"
    assert evaluate.main(["--bundle", str(bundle), "--task", "SafetyPointCircle1-v0", "--episodes", "2",
                          "--steps", "30", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["count"] == 2 and "normalized_reward" in summary
    assert sum(summary["decision_modes"].values()) == 2 * 30   # one decision per robot per tick
    # best of 4 sampled proposals per tick, not the bundle's decision: refused without the override
    four = ["--bundle", str(bundle), "--task", "SafetyPointCircle1-v0", "--episodes", "2", "--steps", "30",
            "--noise", "sample", "--proposals", "4", "--json", str(out)]
    assert evaluate.main(four) == 2
    assert evaluate.main([*four, "--override-decision"]) == 0
    summary = json.loads(out.read_text())
    assert summary["proposals"] == 4 and sum(summary["decision_modes"].values()) == 2 * 30
    assert summary["decision"]["noise"] == "sample" and "decision overridden" in summary["decision_warnings"][0]
    # a what-if δ*: the top of its range (the largest training margin) certifies more ticks than
    # the bottom; states outside the tiny data's range are decided on too (warn)
    low, high = load_bundle(bundle).threshold_range
    nominal = {}
    for threshold in (high, low):
        assert evaluate.main(["--bundle", str(bundle), "--task", "SafetyPointCircle1-v0", "--episodes", "2",
                              "--steps", "30", "--threshold", str(threshold), "--out-of-range", "warn",
                              "--json", str(out)]) == 0
        summary = json.loads(out.read_text())
        assert summary["threshold"] == threshold and "REJECTED" not in summary["decision_modes"]
        nominal[threshold] = summary["decision_modes"].get("NOMINAL", 0)
    assert nominal[low] < nominal[high]
    for option in (["--proposals", "4"], ["--threshold", "-0.3"], ["--out-of-range", "warn"]):
        assert evaluate.main(["--run", str(run), *option, "--episodes", "2", "--steps", "30"]) == 2
        assert "are settings of the deployed decision" in capsys.readouterr().err


def test_policies_trained_on_action_repeat_data_act_every_k_steps(tmp_path):
    """The decision period travels from the data through the run and the bundle to evaluate."""
    import json

    from offline_train import evaluate, export, fit
    data, run, bundle, out = (tmp_path / n for n in ("k3.h5", "run", "bundle", "eval.json"))
    assert collect.main(["--task", "SafetyPointCircle1-v0", "--seed", "1", "--episodes", "2", "--max-episode-steps",
                         "30", "--no-progress", "--action-repeat", "3", "--out", str(data)]) == 0
    assert fit.main(["--task", "SafetyPointCircle1-v0", "--data", str(data), "--out", str(run),
                     "--steps", "10", "--no-progress", *TINY_SET]) == 0
    assert evaluate.main(["--run", str(run), "--episodes", "2", "--steps", "31", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["action_repeat"] == 3 and summary["mean_length"] == 31   # scored on every step
    assert export.main(["--run", str(run), "--out", str(bundle)]) == 0
    assert json.loads((bundle / "bundle.json").read_text())["task"]["action_repeat"] == 3
    assert "Acts every 3 steps" in (bundle / "MODEL_CARD.md").read_text()
    assert evaluate.main(["--bundle", str(bundle), "--task", "SafetyPointCircle1-v0", "--episodes", "2",
                          "--steps", "31", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert sum(summary["decision_modes"].values()) == 2 * 11 and summary["mean_length"] == 31  # ceil(31 / 3)


def test_fit_refuses_data_of_another_task_and_a_task_without_config(tiny_circle, tiny_boat_h5, tmp_path, capsys):
    from offline_train import fit
    assert fit.main(["--task", "SafetyPointGoal1-v0", "--data", tiny_circle, "--out", str(tmp_path / "a"),
                     "--steps", "2", "--no-progress"]) == 2
    assert "holds 'SafetyPointCircle1-v0' data" in capsys.readouterr().err
    assert fit.main(["--task", "SafetyCarGoal9-v0", "--data", tiny_circle, "--out", str(tmp_path / "b"),
                     "--steps", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no config for task 'SafetyCarGoal9-v0'" in err and "SafetyPointCircle1-v0" in err
    assert fit.main(["--task", "SafetyPointCircle1-v0", "--data", tiny_boat_h5, "--out", str(tmp_path / "c"),
                     "--steps", "2", "--no-progress"]) == 2
    assert "holds 'boat' data" in capsys.readouterr().err


def test_a_dsrl_file_without_task_attrs_trains_as_the_given_task(tiny_circle, tmp_path):
    import h5py

    from offline_train import fit
    bare = tmp_path / "dsrl.h5"
    with h5py.File(tiny_circle, "r") as src, h5py.File(bare, "w") as dst:
        for key in ("observations", "next_observations", "actions", "rewards", "costs", "terminals", "timeouts"):
            dst[key] = src[key][:]  # DSRL's keys only: no margins, no attrs
    assert fit.main(["--task", "SafetyPointCircle1-v0", "--data", str(bare), "--out", str(tmp_path / "run"),
                     "--steps", "5", "--no-progress", *TINY_SET]) == 0


HALF_CHEETAH = "SafetyHalfCheetahVelocity-v1"


@pytest.mark.skipif(importlib.util.find_spec("stable_baselines3") is None,
                    reason="stable-baselines3 (optional, velocity tasks) is not installed")
def test_velocity_collect_trains_snapshots_once_and_is_deterministic(tmp_path, capsys):
    import torch

    from safefql_core.envs import velocity_behaviour
    policies = tmp_path / "policies"
    base = ["--task", HALF_CHEETAH, "--seed", "0", "--episodes", "6", "--max-episode-steps", "40",
            "--policies", str(policies), "--no-progress"]
    argv = base + ["--rl-timesteps", "200"]
    assert collect.main(argv + ["--out", str(tmp_path / "a.h5")]) == 0
    snapshots = [path for run in velocity_behaviour.RUNS for path in velocity_behaviour.snapshot_paths(policies, run)]
    assert len(snapshots) == 10 and all(p.is_file() for p in snapshots)
    stamps = [p.stat().st_mtime_ns for p in snapshots]
    data = load_dataset(tmp_path / "a.h5")
    assert len(data) == 240 and data.obs_dim == 17 and data.act_dim == 6
    assert data.attrs["task"] == HALF_CHEETAH and "SAC snapshots" in data.attrs["source"]
    assert list(data.attrs["behaviour_mix"]) == ([f"sac-{k}/5" for k in range(1, 6)]
                                                 + [f"paced-{k}/5" for k in (3, 4, 5)]
                                                 + [f"capped-{k}/5" for k in (3, 4, 5)] + ["random"])
    assert sum(data.attrs["behaviour_mix"].values()) == pytest.approx(1.0)
    np.testing.assert_array_equal(data.margins, np.where(data.costs > 0, 25.0, -1.0))
    # the second collection reuses the snapshots (not retrained) and reproduces the data
    assert collect.main(argv + ["--out", str(tmp_path / "b.h5")]) == 0
    assert [p.stat().st_mtime_ns for p in snapshots] == stamps
    assert fingerprint(load_dataset(tmp_path / "b.h5")) == fingerprint(data)
    # training is reproducible too: same seed, same final snapshot
    again = velocity_behaviour.train_policies(HALF_CHEETAH, tmp_path / "again", seed=0, timesteps=200, progress=False)
    from stable_baselines3 import SAC
    first, second = (SAC.load(p, device="cpu").policy.state_dict() for p in (snapshots[-1], again["paced"][-1]))
    assert all(torch.equal(first[k], second[k]) for k in first)
    # snapshots of other settings are refused, not mixed
    assert collect.main(base + ["--rl-timesteps", "300", "--out", str(tmp_path / "c.h5")]) == 2
    err = capsys.readouterr().err
    assert "holds behaviour policies trained with" in err and not (tmp_path / "c.h5").exists()


def test_paced_reward_loses_the_penalty_above_the_pace():
    from safefql_core.envs import velocity_behaviour as vb
    plain, paced = (vb.gymnasium_env(HALF_CHEETAH, seed=3, pace=pace) for pace in (None, 0.5))
    plain.reset(seed=3), paced.reset(seed=3)
    actions = np.random.default_rng(0).uniform(-1, 1, (60, 6)).astype(np.float32)
    penalised = 0
    for action in actions:
        _, reward, *_, info = plain.step(action)
        _, paced_reward, *_ = paced.step(action)
        excess = max(0.0, info["x_velocity"] - 0.5)
        assert paced_reward == pytest.approx(reward - vb.PACE_PENALTY * excess)
        penalised += excess > 0
    assert 0 < penalised < len(actions)        # both sides of the pace were visited
    plain.close(), paced.close()


def test_velocity_collect_without_sb3_names_the_install(monkeypatch, tmp_path, capsys):
    from safefql_core.envs import velocity_behaviour
    real = velocity_behaviour.importlib.util.find_spec
    monkeypatch.setattr(velocity_behaviour.importlib.util, "find_spec",
                        lambda name: None if name == "stable_baselines3" else real(name))
    assert collect.main(["--task", HALF_CHEETAH, "--episodes", "1", "--out", str(tmp_path / "x.h5"),
                         "--no-progress"]) == 2
    assert "stable-baselines3==2.3.2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        collect.main(["--task", "SafetyPointGoal1-v0", "--policies", str(tmp_path), "--out", str(tmp_path / "y.h5")])
    assert "--policies only applies to SafetyHalfCheetahVelocity-v1" in capsys.readouterr().err


def test_capped_family_coasts_above_its_cap():
    from types import SimpleNamespace

    from safefql_core.envs import velocity_behaviour as vb
    fast = SimpleNamespace(predict=lambda obs, deterministic: (np.ones(6), None),
                           action_space=SimpleNamespace(low=-np.ones(6)))
    policy, noise_sd = vb._capped(fast)(np.random.default_rng(0))
    assert vb.NOISE_SD[0] <= noise_sd <= vb.NOISE_SD[1]
    obs = np.zeros(17, dtype=np.float32)
    obs[vb.FORWARD_SPEED] = vb.SPEED_CAP[0] - 0.1          # below any cap: run
    np.testing.assert_array_equal(policy(obs), np.ones(6))
    obs[vb.FORWARD_SPEED] = vb.SPEED_CAP[1] + 0.1          # above any cap: zero torque
    np.testing.assert_array_equal(policy(obs), np.zeros(6))


def test_switching_family_alternates_both_policies_reproducibly():
    def constant(value):
        return lambda rng: ((lambda obs: np.full(2, value)), 0.1)
    draw = safety_gym_behaviour._switching(constant(1.0), constant(-1.0), mean_hold=10)
    runs = []
    for _ in range(2):
        policy, noise_sd = draw(np.random.default_rng(7))
        runs.append(np.array([policy(None)[0] for _ in range(300)]))
    np.testing.assert_array_equal(runs[0], runs[1])                  # a pure function of the rng
    switches = np.count_nonzero(np.diff(runs[0]))
    assert runs[0][0] == 1.0 and noise_sd == 0.1 and 10 < switches < 60  # ~300 / 10 holds

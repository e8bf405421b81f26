"""`python -m offline_train.replay` on a real rosbag2 and a real (tiny) bundle, without ROS.

The bag is written by `offline_train.collect --format bag` from 3 simulated boat episodes
(seed 2: episode 2 enters an obstacle, so the violation numbers are exercised); the same
episodes regenerated in memory (`boat_behaviour.collect`) are the independent truth the
report's logged numbers are checked against, and fresh `BoatEnv` rollouts of a fresh
runtime are the truth for its closed-loop numbers.
"""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from offline_train import collect
from offline_train import replay as replay_cli
from safefql_core.bags import typestore, write_bag
from safefql_core.envs import boat, boat_behaviour
from safefql_core.replay import warning_lead
from safefql_core.runtime import Mode, RuntimeConfig, load_runtime
from safefql_core.tasks import TaskSpec

EPISODES, STEPS, BAG_SEED, SEED = 3, boat.EPISODE_STEPS, 2, 5
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recorded() -> dict[str, np.ndarray]:
    """What the bag holds, straight from the simulator: [episode, step, ...] arrays."""
    arrays = boat_behaviour.collect(EPISODES, BAG_SEED, progress=False)
    return {k: v.reshape(EPISODES, STEPS, *v.shape[1:]) for k, v in arrays.items()}


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("replay_bag") / "bag"
    assert collect.main(["--task", "boat", "--format", "bag", "--episodes", str(EPISODES),
                         "--seed", str(BAG_SEED), "--out", str(path), "--no-progress"]) == 0
    return str(path)


def run_replay(bag: str, bundle: str, out: Path, *extra: str) -> dict:
    assert replay_cli.main(["--bag", bag, "--bundle", bundle, "--out", str(out), "--seed", str(SEED),
                            "--no-progress", *extra]) == 0
    return json.loads((out / "replay.json").read_text())


@pytest.fixture(scope="module")
def report(bag, bundle, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("replay_report")
    return out, run_replay(bag, bundle, out)


def test_open_loop_covers_every_aligned_tick(report, recorded):
    out, r = report
    rows, summary = r["open_loop"]["episodes"], r["open_loop"]["summary"]
    assert r["alignment"]["transitions"] == summary["ticks"] == EPISODES * STEPS
    assert [row["ticks"] for row in rows] == [STEPS] * EPISODES
    assert [row["first_tick"] for row in rows] == [e * STEPS for e in range(EPISODES)]
    with (out / "ticks.csv").open() as f:
        ticks = list(csv.DictReader(f))
    assert len(ticks) == summary["ticks"]
    for row in rows:
        assert sum(row["modes"].values()) == row["ticks"]
        assert row["interventions"] == row["modes"].get("INTERVENE", 0) + row["modes"].get("UNSAFE", 0)
        assert row["interventions"] == sum(t["mode"] in ("INTERVENE", "UNSAFE") for t in ticks
                                           if int(t["episode"]) == row["episode"])
    costs = recorded["costs"]
    assert [row["violating_ticks"] for row in rows] == costs.sum(axis=1).astype(int).tolist()
    assert summary["violating_ticks"] > 0, "the seed-2 bag should contain an obstacle entry"
    for row, c in zip(rows, costs):
        assert row["first_violation_tick"] == (int(np.argmax(c > 0)) if c.any() else None)
        assert (row["warning_lead_ticks"] is None) == (row["first_violation_tick"] is None)


def test_open_loop_numbers_are_the_runtimes(report, recorded, bundle):
    """Each CSV row is what a fresh runtime decides at that state, and the logged actions are
    refused exactly where the safety graph scores them at or above δ*."""
    out, r = report
    with (out / "ticks.csv").open() as f:
        ticks = [t for t in csv.DictReader(f) if int(t["episode"]) == 2]
    runtime = load_runtime(bundle, RuntimeConfig(seed=SEED))
    obs = recorded["observations"][2].astype(np.float32)
    for t, o in zip(ticks, obs):
        d = runtime.decide(o)
        assert t["mode"] == d.mode.value
        assert float(t["q_safe"]) == pytest.approx(d.q_safe, rel=1e-5, abs=1e-7)
        assert float(t["margin_to_threshold"]) == pytest.approx(d.margin, rel=1e-5, abs=1e-7)
        policy = [float(t["policy.twist.linear.x"]), float(t["policy.twist.linear.y"])]
        assert policy == pytest.approx(d.action, abs=1e-5)
    q, _ = runtime.graphs.run("safety", {"observation": obs, "action": recorded["actions"][2].astype(np.float32)})
    assert [float(t["q_logged"]) for t in ticks] == pytest.approx(q, rel=1e-5, abs=1e-7)
    assert r["open_loop"]["episodes"][2]["logged_failed_check"] == int((q >= r["threshold"]).sum())
    assert [float(t["l"]) for t in ticks] == pytest.approx(boat.margin(obs), abs=1e-5)


def test_logged_outcomes_match_the_recording(report, recorded):
    rows = report[1]["closed_loop"]["episodes"]
    states = np.concatenate([recorded["observations"], recorded["next_observations"][:, -1:]], axis=1)
    for row, rew, cost, traj in zip(rows, recorded["rewards"], recorded["costs"], states):
        assert row["steps"] == STEPS
        assert row["logged"]["return"] == pytest.approx(rew.sum(), rel=1e-5)
        assert row["logged"]["violating_steps"] == int(cost.sum())
        assert row["logged"]["reached_goal"] == bool(boat.reached_goal(traj))


def test_closed_loop_equals_an_independent_rollout(report, recorded, bundle):
    """Every episode, re-run here from its recorded first state with a fresh runtime of the
    same seed, ends with the report's return, violations, goal and interventions."""
    r = report[1]
    rows = r["closed_loop"]["episodes"]
    for row, first in zip(rows, recorded["observations"][:, 0]):
        initial = first.astype(np.float32)  # the converter's float32 observation
        assert row["initial_state"] == initial.tolist()
        runtime = load_runtime(bundle, RuntimeConfig(seed=SEED))
        env = boat.BoatEnv(1)
        obs = env.reset(initial[None])
        total, violations, interventions, path = 0.0, 0, 0, [obs[0]]
        for _ in range(row["steps"]):
            d = runtime.decide(obs[0])
            interventions += d.mode in (Mode.INTERVENE, Mode.UNSAFE)
            obs, reward, cost, *_ = env.step(d.action)
            total += reward[0]
            violations += int(cost[0])
            path.append(obs[0])
        closed = row["closed_loop"]
        assert closed["return"] == pytest.approx(total, rel=1e-12)
        assert closed["violating_steps"] == violations
        assert closed["interventions"] == interventions
        assert closed["reached_goal"] == bool(boat.reached_goal(np.array(path)))
    summary = r["closed_loop"]["summary"]
    assert summary["closed_loop"]["return"] == pytest.approx(sum(row["closed_loop"]["return"] for row in rows))
    assert summary["logged"]["violating_steps"] == r["open_loop"]["summary"]["violating_ticks"]


def test_plots_are_written(report):
    import matplotlib.image
    out, r = report
    assert set(r["files"]) == {"replay.json", "ticks.csv", "map.png", "safety.png"}
    for name in ("map.png", "safety.png"):
        assert (out / name).stat().st_size > 20_000, f"{name} is suspiciously small"
        image = matplotlib.image.imread(out / name)
        assert image.shape[0] > 300 and image[..., :3].std() > 0.05, f"{name} is blank"


def test_same_seed_same_report_and_episodes_are_independent(report, bag, bundle, tmp_path):
    out, r = report
    assert run_replay(bag, bundle, tmp_path / "again") == r
    for name in ("replay.json", "ticks.csv"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes()
    first = run_replay(bag, bundle, tmp_path / "first", "--episodes", "1", "--no-closed-loop")
    assert first["open_loop"]["episodes"] == r["open_loop"]["episodes"][:1]
    assert first["closed_loop"] == {"skipped": "--no-closed-loop given"}


def test_task_without_simulator_gets_open_loop_only(bag, bundle, tmp_path, capsys):
    """A bundle and spec of another task (same topics): open loop runs, closed loop says why not."""
    config = tmp_path / "dock.yaml"
    config.write_text(yaml.safe_dump({"task": "dock", "spec": TaskSpec.builtin("boat").to_dict()}))
    r = run_replay(bag, retask(bundle, tmp_path, "dock"), tmp_path / "out", "--config", str(config),
                   "--episodes", "1")
    assert r["open_loop"]["summary"]["ticks"] == STEPS
    assert "needs a simulator" in r["closed_loop"]["skipped"]
    assert not (tmp_path / "out" / "map.png").exists() and (tmp_path / "out" / "safety.png").exists()
    assert "needs a simulator" in capsys.readouterr().out


def test_warning_lead():
    f, t = False, True
    assert warning_lead(np.array([t, t, f]), np.array([f, f, f])) is None
    assert warning_lead(np.array([t, f, t, t, t, f]), np.array([f, f, f, f, f, t])) == 3
    assert warning_lead(np.array([t, f, f, f]), np.array([f, f, f, t])) == 0  # an old refusal is no warning
    assert warning_lead(np.array([t, t, t]), np.array([f, f, t])) == 2
    assert warning_lead(np.array([f, f]), np.array([t, t])) == 0


def retask(bundle: str, root: Path, task: str) -> str:
    """A copy of `bundle` that claims another task (bundle.json itself carries no checksum)."""
    other = root / f"{task}_bundle"
    shutil.copytree(bundle, other)
    meta = json.loads((other / "bundle.json").read_text())
    meta["task"]["name"] = task
    (other / "bundle.json").write_text(json.dumps(meta))
    return str(other)


def error_case(case: str, bag: str, bundle: str, root: Path) -> tuple[str, str]:
    """(bag, bundle) arguments for one broken input."""
    if case == "missing bag":
        return str(root / "nope"), bundle
    if case == "missing bundle":
        return bag, str(root / "nope")
    if case == "mismatched bundle":
        return bag, retask(bundle, root, "point_goal")
    write_bag(root / "empty", {"/boat/odom": "nav_msgs/msg/Odometry"}, [], typestore("kilted"))
    return str(root / "empty"), bundle


@pytest.mark.parametrize("case, expected", [
    ("missing bag", ["nope does not exist; pass a rosbag2 directory, a .mcap or .db3 file"]),
    ("missing bundle", ["not a policy bundle"]),
    ("mismatched bundle", ["task: the bundle 'point_goal', --config 'boat'", "does not match"]),
    ("empty bag", ["is empty", "/boat/odom"]),
])
def test_clear_errors(case, expected, bag, bundle, tmp_path, capsys):
    """Each case names the boat spec explicitly (--config): a bundle of another task is refused
    showing both task names."""
    bag_arg, bundle_arg = error_case(case, bag, bundle, tmp_path)
    config = ["--config", str(Path(__file__).parents[1] / "config" / "boat.yaml")]
    code = replay_cli.main(["--bag", bag_arg, "--bundle", bundle_arg, "--out", str(tmp_path / "out"),
                            "--no-progress", *config])
    err = capsys.readouterr().err
    assert code == 2
    for text in expected:
        assert text in err, err
    assert "Traceback" not in err and not (tmp_path / "out" / "replay.json").exists()


def test_cli_runs_without_ros():
    """The module entry point imports neither rclpy nor any safefql_ros node."""
    code = ("import sys, offline_train.replay; "
            "ros = sorted(m for m in sys.modules if m.startswith(('rclpy', 'safefql_ros'))); assert not ros, ros")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    help_text = subprocess.run([sys.executable, "-m", "offline_train.replay", "--help"], cwd=ROOT,
                               check=True, capture_output=True, text=True).stdout
    assert "--no-closed-loop" in help_text and "--seed" in help_text

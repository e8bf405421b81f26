"""`collect --task diffdrive --format bag`: behaviour episodes as a real rosbag2 of standard messages."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from rosbags.highlevel import AnyReader

from offline_train import collect
from safefql_core.envs import diffdrive
from safefql_core.envs import diffdrive_behaviour as behaviour

CONFIG = Path(__file__).resolve().parents[1] / "config" / "diffdrive.yaml"


def read(bag) -> dict[str, list]:
    out: dict[str, list] = {}
    with AnyReader([bag]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        for connection, t, raw in reader.messages():
            out.setdefault(connection.topic, []).append((t, reader.deserialize(raw, connection.msgtype)))
    return types, out


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffdrive_bag")
    argv = ["--task", "diffdrive", "--format", "bag", "--episodes", "3", "--seed", "1", "--no-progress"]
    assert collect.main([*argv, "--out", str(root / "a")]) == 0
    return root, argv


def test_bag_holds_odometry_scan_and_twist_stamped_per_episode(recorded):
    root, _ = recorded
    types, msgs = read(root / "a")
    assert types == {"/diffdrive/odom": "nav_msgs/msg/Odometry", "/diffdrive/scan": "sensor_msgs/msg/LaserScan",
                     "/diffdrive/cmd_vel": "geometry_msgs/msg/TwistStamped"}
    odom, scan, cmd = (msgs[f"/diffdrive/{n}"] for n in ("odom", "scan", "cmd_vel"))
    # one odometry and one scan per tick, a command on every tick but each episode's last
    stamps = np.array([t for t, _ in odom])
    gaps = np.flatnonzero(np.diff(stamps) > 0.5e9)
    assert len(gaps) == 2 and [t for t, _ in scan] == stamps.tolist()
    assert len(cmd) == len(odom) - 3
    for t, m in odom[:3]:
        assert m.header.stamp.sec * 10**9 + m.header.stamp.nanosec == t
        assert (m.header.frame_id, m.child_frame_id) == ("odom", "base_link")
    assert np.diff(stamps[:gaps[0] + 1]).tolist() == [round(diffdrive.DT * 1e9)] * gaps[0]
    # poses, yaw quaternions, ranges (with +inf kept) and commands within the robot's limits
    poses = np.array([[m.pose.pose.position.x, m.pose.pose.position.y,
                       2 * np.arctan2(m.pose.pose.orientation.z, m.pose.pose.orientation.w)] for _, m in odom])
    ranges = np.stack([m.ranges for _, m in scan])
    assert ranges.shape[1] == diffdrive.world().beams and np.isposinf(ranges).any()
    v = np.array([[m.twist.linear.x, m.twist.angular.z] for _, m in cmd])
    assert (np.abs(v) <= diffdrive.world().command_high + 1e-9).all()
    # an episode that collided ends stopped in contact (CONTACT_STEPS after the bump); the others ran to the time-out
    ends = np.append(gaps, len(odom) - 1)
    starts = np.insert(gaps + 1, 0, 0)
    assert (diffdrive.clearance(poses[starts, :2]) >= 0.2 + diffdrive.START_CLEARANCE).all()
    collided = diffdrive.margin(poses[ends, :2]) >= -1e-9
    lengths = ends - starts
    assert (lengths[~collided] == diffdrive.EPISODE_STEPS).all()
    for end in ends[collided]:
        assert (poses[end - behaviour.CONTACT_STEPS:end + 1] == poses[end]).all()


def test_same_seed_same_bag_and_hdf5_is_refused(recorded, tmp_path, capsys):
    root, argv = recorded
    assert collect.main([*argv, "--out", str(tmp_path / "b")]) == 0
    a, b = read(root / "a")[1], read(tmp_path / "b")[1]
    assert a.keys() == b.keys()
    for topic in a:
        assert [t for t, _ in a[topic]] == [t for t, _ in b[topic]]
    turn_rates = [[m.twist.angular.z for _, m in bag["/diffdrive/cmd_vel"]] for bag in (a, b)]
    assert turn_rates[0] == turn_rates[1]
    with pytest.raises(SystemExit):
        collect.main(["--task", "diffdrive", "--out", str(tmp_path / "c.h5")])
    assert "--format bag" in capsys.readouterr().err


def test_the_printed_rates_are_those_of_the_recorded_episodes(tmp_path, capsys):
    assert collect.main(["--task", "diffdrive", "--format", "bag", "--episodes", "2", "--seed", "5", "--no-progress",
                         "--out", str(tmp_path / "bag")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["behaviour"]
    _, msgs = read(tmp_path / "bag")
    stamps = np.array([t for t, _ in msgs["/diffdrive/odom"]])
    ends = np.append(np.flatnonzero(np.diff(stamps) > 0.5e9), len(stamps) - 1)
    last = np.array([[m.pose.pose.position.x, m.pose.pose.position.y] for _, m in msgs["/diffdrive/odom"]])[ends]
    assert summary["episodes"] == 2
    assert summary["zero_collision_rate"] == pytest.approx(np.mean(diffdrive.margin(last) < -1e-9))


def test_starts_from_the_fixed_evaluation_set(tmp_path, capsys):
    assert collect.main(["--task", "diffdrive", "--format", "bag", "--starts", "evaluation", "--episodes", "2",
                         "--no-progress", "--out", str(tmp_path / "bag")]) == 0
    _, msgs = read(tmp_path / "bag")
    odom = msgs["/diffdrive/odom"]
    stamps = np.array([t for t, _ in odom])
    first = [0, int(np.flatnonzero(np.diff(stamps) > 0.5e9)[0]) + 1]
    xy = np.array([[odom[i][1].pose.pose.position.x, odom[i][1].pose.pose.position.y] for i in first])
    assert xy == pytest.approx(diffdrive.evaluation_starts()[:2, :2])
    with pytest.raises(SystemExit):
        collect.main(["--task", "diffdrive", "--format", "bag", "--starts", "validation", "--episodes", "201",
                      "--out", str(tmp_path / "too_many")])
    assert "at most 200" in capsys.readouterr().err


def test_config_diffdrive_converts_the_bag_into_its_features_reward_and_margin(recorded):
    from safefql_core.pipeline.convert import read_aligned
    from safefql_core.tasks import TaskSpec

    root, _ = recorded
    spec = TaskSpec.load(CONFIG)
    arrays, report, _ = read_aligned(root / "a", spec, progress=False)
    _, msgs = read(root / "a")
    assert report.episodes == 3 and len(arrays["observations"]) == len(msgs["/diffdrive/cmd_vel"])
    obs, w = arrays["observations"], diffdrive.world()
    assert spec.observation_names[:4] == ["x", "y", "yaw_sin", "yaw_cos"] and obs.shape[1] == 16
    # the first tick is the first odometry and scan of the bag, through the spec's features
    odom, scan = msgs["/diffdrive/odom"][0][1], msgs["/diffdrive/scan"][0][1]
    yaw = 2 * np.arctan2(odom.pose.pose.orientation.z, odom.pose.pose.orientation.w)
    ranges = np.where(np.isposinf(scan.ranges), w.range_max, scan.ranges)   # +inf: nothing within range_max
    sectors = ranges.reshape(12, 3).min(axis=1)
    assert obs[0] == pytest.approx([odom.pose.pose.position.x, odom.pose.pose.position.y, np.sin(yaw), np.cos(yaw),
                                    *sectors], abs=1e-5)
    # margin = radius - closest return: positive exactly on the transitions recorded in contact
    assert arrays["margins"] == pytest.approx(0.2 - obs[:, 4:].min(axis=1), abs=1e-5)
    contact = diffdrive.margin(obs[:, :2]) >= -1e-9
    assert contact.any() and np.array_equal(arrays["margins"] > -1e-6, contact)
    assert arrays["rewards"] == pytest.approx(-np.hypot(obs[:, 0] - 5.0, obs[:, 1] - 5.0), abs=1e-5)
    v = np.array([[m.twist.linear.x, m.twist.angular.z] for _, m in msgs["/diffdrive/cmd_vel"]])
    assert arrays["actions"] == pytest.approx(v / w.command_high, abs=1e-6)


def test_evaluation_observes_and_commands_exactly_as_the_converted_bag(recorded):
    from safefql_core.pipeline.convert import read_aligned
    from safefql_core.pipeline.diffdrive_evaluate import commander, observer
    from safefql_core.tasks import TaskSpec

    root, _ = recorded
    spec = TaskSpec.load(CONFIG)
    arrays, _, _ = read_aligned(root / "a", spec, progress=False)
    episodes = behaviour.collect(3, seed=1, progress=False)   # what `collect --episodes 3 --seed 1` recorded
    observe = observer(spec)
    seen = np.concatenate([observe(diffdrive.Readings(episodes.pose[e, :n], episodes.velocity[e, :n],
                                                      episodes.ranges[e, :n]))
                           for e, n in enumerate(episodes.lengths)])
    assert seen == pytest.approx(arrays["observations"], abs=1e-5)
    sent = commander(spec)(arrays["actions"])
    assert sent == pytest.approx(np.concatenate([episodes.commands[e, :n] for e, n in enumerate(episodes.lengths)]),
                                 abs=1e-5)


def test_fit_bag_then_evaluate_the_bundle_on_the_validation_starts(recorded, tmp_path):
    from offline_train import evaluate, fit

    root, _ = recorded
    run = tmp_path / "run"
    # --task alone picks config/diffdrive.yaml, for the training settings and the bag's spec (as `make demo` runs it)
    assert fit.main(["--bag", str(root / "a"), "--task", "diffdrive", "--out", str(run), "--steps", "20",
                     "--set", "critic_hidden=[32, 32]", "flow_hidden=[32, 32]", "batch_size=64", "flow_steps=3",
                     "--calibration-n", "3", "--no-progress"]) == 0
    # δ* is calibrated in the robot's simulator, on the deployed decision, not on the logged episodes
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["source"] == "simulated rollouts of the deployed decision" and calibration["n"] == 3
    assert calibration["no_simulator"] is None and calibration["fixed_point"]["rounds"]
    assert json.loads((run / "bundle" / "bundle.json").read_text())["calibration"]["delta"] == calibration["delta"]
    out = tmp_path / "eval.json"
    assert evaluate.main(["--bundle", str(run / "bundle"), "--init-states", "validation", "--episodes", "3",
                          "--steps", "30", "--json", str(out), "--plot", str(tmp_path / "map.png")]) == 0
    assert (tmp_path / "map.png").stat().st_size > 10_000
    summary = json.loads(out.read_text())
    assert (summary["task"], summary["count"], summary["starts"], summary["steps"]) == \
        ("diffdrive", 3, "validation", 30)
    assert 0 <= summary["zero_collision_rate"] <= 1 and 0 <= summary["goal_reached_rate"] <= 1
    assert sum(summary["decision_modes"].values()) > 0
    assert evaluate.main(["--bundle", str(run / "bundle"), "--init-states", "nowhere"]) == 2


def test_a_spec_of_another_robot_is_not_evaluated_in_the_simulator():
    from safefql_core.pipeline.diffdrive_evaluate import commander
    from safefql_core.tasks import TaskSpec
    from safefql_core.training import RunError

    doc = yaml.safe_load(CONFIG.read_text())["spec"]
    commander(TaskSpec.from_dict(doc, "diffdrive"))
    doc["command"]["high"] = [0.26, 1.82]   # a TurtleBot3 Waffle's limits: another robot
    with pytest.raises(RunError, match="not the diff-drive robot's"):
        commander(TaskSpec.from_dict(doc, "diffdrive"))

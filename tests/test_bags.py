"""The bag workflow: collect --format bag -> convert -> fit --bag, and errors that name the fix."""
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_tasks import boat_dict

from offline_train import collect, convert, fit
from offline_train.bags import BagError, default_message, read_series, typestore, write_bag, write_episodes
from safefql_core.bundle import load_bundle
from safefql_core.data import load_dataset
from safefql_core.tasks import TaskSpec, TaskSpecError

SEED, EPISODES = 5, 3
BOAT = TaskSpec.builtin("boat")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> dict[str, Path]:
    """The same seed and episodes collected as HDF5 and as mcap and sqlite3 bags."""
    root = tmp_path_factory.mktemp("bags")
    common = ["--seed", str(SEED), "--episodes", str(EPISODES), "--no-progress"]
    assert collect.main([*common, "--out", str(root / "direct.h5")]) == 0
    for storage in ("mcap", "sqlite3"):
        assert collect.main([*common, "--format", "bag", "--storage", storage, "--out", str(root / storage)]) == 0
    return {"h5": root / "direct.h5", "mcap": root / "mcap", "sqlite3": root / "sqlite3"}


def run_convert(capsys, *args: str) -> tuple[int, str, str]:
    code = convert.main([*map(str, args), "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def small_bag(path: Path, spec: TaskSpec, states: np.ndarray, storage: str = "mcap") -> Path:
    """A bag of one episode with these states on `spec`'s topics (zero actions)."""
    write_episodes(path, spec, states[None], np.zeros((1, len(states) - 1, spec.act_dim)), storage)
    return path


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_round_trip_reproduces_the_direct_dataset(recorded, storage, tmp_path, capsys):
    code, out, _ = run_convert(capsys, "--bag", recorded[storage], "--out", tmp_path / "conv.h5")
    assert code == 0, out
    assert f"{EPISODES} episode(s)" in out and "1,200 transitions" in out and "ticks dropped: none" in out
    direct, converted = load_dataset(recorded["h5"]), load_dataset(tmp_path / "conv.h5")
    for key in ("observations", "next_observations", "actions", "rewards", "margins", "costs",
                "terminals", "timeouts"):
        np.testing.assert_allclose(getattr(converted, key), getattr(direct, key), atol=1e-5, err_msg=key)
    assert converted.attrs["task_spec"] == BOAT.to_dict()
    assert converted.attrs["observation_fields"] == ["pose.pose.position.x", "pose.pose.position.y"]
    assert converted.attrs["bag_storage"] == storage and converted.attrs["control_period"] == 0.005


def test_content_hash_identifies_the_recording_not_the_container(recorded):
    hashes = {read_series(recorded[s], BOAT, progress=False)[1].content_hash for s in ("mcap", "sqlite3")}
    assert len(hashes) == 1


def test_fit_bag_converts_trains_calibrates_exports(recorded, tmp_path, capsys):
    run = tmp_path / "run"
    code = fit.main(["--bag", str(recorded["mcap"]), "--out", str(run), "--steps", "20", "--no-progress",
                     "--set", "critic_hidden=[16,16]", "flow_hidden=[16,16]", "batch_size=32"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "1,200 transitions" in out and (run / "checkpoint.pt").is_file()
    assert load_dataset(run / fit.DATASET).attrs["bag_content_hash"]
    assert "δ* =" in out and "wrote bundle" in out
    bundle = load_bundle(run / fit.BUNDLE)
    assert bundle.meta["calibration"]["method"] == "beta"
    assert bundle.threshold == bundle.meta["calibration"]["delta"] <= 0
    assert bundle.meta["task"]["control_period"] == pytest.approx(0.005)


def test_fit_takes_data_or_bag_not_both(recorded, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        fit.main(["--bag", str(recorded["mcap"]), "--data", str(recorded["h5"]), "--out", str(tmp_path)])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_missing_topic_lists_the_topics_the_bag_has(tmp_path, capsys):
    other = TaskSpec.from_dict(boat_dict(**{"command.topic": "/other/cmd"}), "boat")
    bag = small_bag(tmp_path / "bag", other, np.zeros((3, 2)))
    code, _, err = run_convert(capsys, "--bag", bag, "--out", tmp_path / "d.h5")
    assert code == 2 and "Traceback" not in err
    assert err.startswith("error: command topic /boat/cmd_vel is not in")
    assert ("the bag has: /boat/odom (nav_msgs/msg/Odometry, 3 msgs), "
            "/other/cmd (geometry_msgs/msg/Twist, 2 msgs)") in err


def test_wrong_message_type_is_named(tmp_path, capsys):
    pose = TaskSpec.from_dict(boat_dict(**{"state.type": "geometry_msgs/msg/PoseStamped",
                                           "state.fields": ["pose.position.x", "pose.position.y"]}), "boat")
    bag = small_bag(tmp_path / "bag", pose, np.zeros((3, 2)))
    code, _, err = run_convert(capsys, "--bag", bag, "--out", tmp_path / "d.h5")
    assert code == 2
    assert "state topic /boat/odom" in err
    assert "has type geometry_msgs/msg/PoseStamped, the task spec says nav_msgs/msg/Odometry" in err


def test_bad_field_path_is_named_with_the_fields_that_exist(recorded, tmp_path, capsys):
    config = tmp_path / "typo.yaml"
    spec = boat_dict(**{"state.fields": ["pose.pose.position.x", "pose.pose.positon.y"]})
    config.write_text(yaml.safe_dump({"task": "boat", "spec": spec}))
    code, _, err = run_convert(capsys, "--bag", recorded["mcap"], "--config", config, "--out", tmp_path / "d.h5")
    assert code == 2
    assert "field 'pose.pose.positon.y' does not exist in nav_msgs/msg/Odometry" in err
    assert "['position', 'orientation']" in err


@pytest.mark.parametrize("messages", [0, 1])
def test_empty_bag_is_refused(tmp_path, capsys, messages):
    store = typestore("kilted")
    topics = {"/boat/odom": "nav_msgs/msg/Odometry"}
    msg = default_message(store, "nav_msgs/msg/Odometry")
    write_bag(tmp_path / "bag", topics, [("/boat/odom", 0, msg)] * messages, store)
    code, _, err = run_convert(capsys, "--bag", tmp_path / "bag", "--out", tmp_path / "d.h5")
    assert code == 2
    assert ("is empty (no messages)" if messages == 0 else "command topic /boat/cmd_vel is not in") in err


@pytest.mark.parametrize("storage, suffix", [("mcap", ".mcap"), ("sqlite3", ".db3")])
def test_truncated_bag_is_refused(recorded, tmp_path, capsys, storage, suffix):
    bag = Path(shutil.copytree(recorded[storage], tmp_path / "cut"))
    data = next(bag.glob(f"*{suffix}"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    code, _, err = run_convert(capsys, "--bag", bag, "--out", tmp_path / "d.h5")
    assert code == 2 and "Traceback" not in err
    assert "cannot be read" in err and "truncated or corrupt" in err
    assert not (tmp_path / "d.h5").exists()


def test_not_a_bag_directory(tmp_path, capsys):
    code, _, err = run_convert(capsys, "--bag", tmp_path, "--out", tmp_path / "d.h5")
    assert code == 2 and "not a rosbag2 directory (no metadata.yaml)" in err


def test_non_finite_values_are_refused_or_dropped_by_flag(tmp_path, capsys):
    states = np.linspace([0.0, 0.0], [0.1, 0.1], 11)
    states[[3, 7], 0] = np.nan
    bag = small_bag(tmp_path / "bag", BOAT, states)
    code, _, err = run_convert(capsys, "--bag", bag, "--out", tmp_path / "d.h5")
    assert code == 2 and "non-finite values in 2 on /boat/odom (state); pass --on-nonfinite drop" in err
    code, out, _ = run_convert(capsys, "--bag", bag, "--out", tmp_path / "d.h5", "--on-nonfinite", "drop")
    assert code == 0
    assert "non-finite samples: 2 state (--on-nonfinite drop)" in out
    assert "ticks dropped: 2 non-finite state, 2 non-finite next state" in out
    data = load_dataset(tmp_path / "d.h5")
    assert len(data) == 6 and data.timeouts.sum() == 3  # transitions 0-1, 4-5, 8-9


def test_bag_without_stored_definitions_reads_with_the_typestore_flag(tmp_path, capsys):
    """Humble-era bags store no message definitions: --typestore supplies them."""
    bag = small_bag(tmp_path / "bag", BOAT, np.zeros((3, 2)), storage="sqlite3")
    with sqlite3.connect(next(bag.glob("*.db3"))) as db:
        db.execute("DELETE FROM message_definitions")
        db.execute("UPDATE topics SET type_description_hash = ''")
    code, out, err = run_convert(capsys, "--bag", bag, "--out", tmp_path / "d.h5", "--typestore", "humble")
    assert code == 0, err
    assert "2 transitions" in out


def test_spec_errors_reach_the_cli_as_errors(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"task": "boat", "spec": boat_dict(margin={"function": "nope"})}))
    code, _, err = run_convert(capsys, "--bag", tmp_path, "--config", config, "--out", tmp_path / "d.h5")
    assert code == 2 and "unknown function 'nope'" in err
    with pytest.raises(TaskSpecError):
        TaskSpec.load(config)


def test_collect_refuses_to_overwrite_a_bag(recorded, capsys):
    code = collect.main(["--episodes", "1", "--format", "bag", "--out", str(recorded["mcap"]), "--no-progress"])
    assert code == 2 and "cannot write bag" in capsys.readouterr().err
    with pytest.raises(BagError, match="unknown storage"):
        write_bag(recorded["mcap"], {}, [], typestore("kilted"), storage="zip")


def test_fit_bag_errors_are_reported_not_raised(tmp_path, capsys):
    assert fit.main(["--bag", str(tmp_path), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith("error: ") and not (tmp_path / "run" / "checkpoint.pt").exists()

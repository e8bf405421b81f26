"""The bag workflow: collect --format bag -> convert -> fit --bag, and errors that name the fix."""
import re
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_tasks import boat_dict

from offline_train import collect, convert, fit
from safefql_core.bags import (
    SIM_EPOCH_NS,
    BagError,
    default_message,
    episode_messages,
    read_series,
    typestore,
    write_bag,
    write_episodes,
)
from safefql_core.bundle import load_bundle
from safefql_core.data import load_dataset
from safefql_core.pipeline.files import BUNDLE, DATASET
from safefql_core.tasks import NS, TaskSpec, TaskSpecError

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
    assert converted.attrs["observation_fields"] == ["x", "y"]
    assert converted.attrs["bag_storage"] == storage and converted.attrs["control_period"] == 0.005


def test_content_hash_identifies_the_recording_not_the_container(recorded):
    hashes = {read_series(recorded[s], BOAT, progress=False)[1].content_hash for s in ("mcap", "sqlite3")}
    assert len(hashes) == 1


def test_fit_bag_converts_trains_calibrates_exports(recorded, tmp_path, capsys):
    run = tmp_path / "run"
    code = fit.main(["--bag", str(recorded["mcap"]), "--out", str(run), "--steps", "20", "--no-progress",
                     "--calibration-n", "300", "--set", "critic_hidden=[16,16]", "flow_hidden=[16,16]",
                     "batch_size=32"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "1,200 transitions" in out and (run / "checkpoint.pt").is_file()
    assert load_dataset(run / DATASET).attrs["bag_content_hash"]
    assert "δ* =" in out and "wrote bundle" in out
    bundle = load_bundle(run / BUNDLE)
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
            "/other/cmd (geometry_msgs/msg/TwistStamped, 2 msgs)") in err


def test_wrong_message_type_is_named(tmp_path, capsys):
    pose = TaskSpec.from_dict(boat_dict(**{"state.type": "geometry_msgs/msg/PoseStamped",
                                           "state.fields": ["pose.position.x", "pose.position.y"]}), "boat")
    bag = small_bag(tmp_path / "bag", pose, np.zeros((3, 2)))
    code, _, err = run_convert(capsys, "--bag", bag, "--out", tmp_path / "d.h5")
    assert code == 2
    assert "odom topic /boat/odom" in err and "fix `inputs.odom.type`" in err
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


def scrambled(bag: Path, out: Path, seed: int) -> Path:
    """A copy of an mcap bag with 2 KB of random bytes in the middle of its .mcap file (issue 26 item 6)."""
    bag = Path(shutil.copytree(bag, out))
    data = next(bag.glob("*.mcap"))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2:len(raw) // 2 + 2048] = np.random.default_rng(seed).bytes(2048)
    data.write_bytes(bytes(raw))
    return bag


def damaged(recorded, tmp_path: Path, capsys, bare: bool, damage: str) -> tuple[Path, str]:
    """The first of seeds 0, 1, ... whose scrambled copy of the recorded mcap fails with the kind
    of `damage` wanted (where 2 KB land decides which: inside a chunk that rosbags reads past,
    or on a record length that stops it), with its error. Every copy tried must be refused
    cleanly, whatever the damage."""
    for seed in range(20):
        bag = scrambled(recorded["mcap"], tmp_path / f"bag{seed}", seed=seed)
        bag = next(bag.glob("*.mcap")) if bare else bag
        code, _, err = run_convert(capsys, "--bag", bag, "--out", tmp_path / "d.h5")
        assert code == 2 and "Traceback" not in err and not (tmp_path / "d.h5").exists(), err
        if re.search(damage, err):
            return bag, err
    raise AssertionError(f"no scramble of seeds 0-19 gave {damage!r}")


@pytest.mark.parametrize("bare", [False, True])
def test_corrupt_mcap_is_refused_unless_partial_is_allowed(recorded, tmp_path, capsys, bare):
    """The metadata's counts (metadata.yaml, or a bare file's mcap summary) are checked against
    the messages read: rosbags reads past a scrambled chunk without a word."""
    bag, err = damaged(recorded, tmp_path, capsys, bare, "is corrupt: its metadata lists")
    read = re.search(r"is corrupt: its metadata lists 2,403 messages on the task's topics, ([\d,]+) could be "
                     r"read \(/boat/odom: [\d,]+ of 1,203; /boat/cmd_vel: [\d,]+ of 1,200\)", err)
    assert read and "Re-copy or re-record it; --allow-partial converts the messages that were read" in err
    code, out, err = run_convert(capsys, "--bag", bag, "--out", tmp_path / "d.h5", "--allow-partial")
    assert code == 0, err
    assert f"WARNING: {bag} is damaged and was read only in part (/boat/odom: " in out
    assert f"converted {bag} (mcap, {read[1]} messages" in out
    data = load_dataset(tmp_path / "d.h5")
    assert 0 < len(data) < EPISODES * 400
    partial = data.attrs["bags"][0]["partial"]
    assert partial["/boat/odom"][1] == 1203 and sum(n for n, _ in partial.values()) == int(read[1].replace(",", ""))


def test_unreadable_mcap_names_the_damage_even_with_allow_partial(recorded, tmp_path, capsys):
    bag, _ = damaged(recorded, tmp_path, capsys, False, "after 0 messages")  # a record length: nothing reads
    for flags in ([], ["--allow-partial"]):
        code, _, err = run_convert(capsys, "--bag", bag, "--out", tmp_path / "d.h5", *flags)
        assert code == 2 and "Traceback" not in err
        assert "cannot be read after 0 messages (OverflowError" in err and "truncated or corrupt" in err


def test_not_a_bag_directory(tmp_path, capsys):
    code, _, err = run_convert(capsys, "--bag", tmp_path, "--out", tmp_path / "d.h5")
    assert code == 2 and "is neither a bag nor a folder of bags: no metadata.yaml, .mcap or .db3 in it" in err


def test_non_finite_values_are_refused_or_dropped_by_flag(tmp_path, capsys):
    states = np.linspace([0.0, 0.0], [0.1, 0.1], 11)
    states[[3, 7], 0] = np.nan
    bag = small_bag(tmp_path / "bag", BOAT, states)
    code, _, err = run_convert(capsys, "--bag", bag, "--out", tmp_path / "d.h5")
    assert code == 2 and "non-finite values in 2 on /boat/odom (odom); pass --on-nonfinite drop" in err
    code, out, _ = run_convert(capsys, "--bag", bag, "--out", tmp_path / "d.h5", "--on-nonfinite", "drop")
    assert code == 0
    assert "non-finite samples: 2 odom (--on-nonfinite drop)" in out
    assert "ticks dropped: 2 non-finite odom state, 2 non-finite next odom state" in out
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


def test_a_bare_mcap_file_converts_like_its_bag_directory(recorded, tmp_path, capsys):
    bare = next(recorded["mcap"].glob("*.mcap"))
    code, out, err = run_convert(capsys, "--bag", bare, "--out", tmp_path / "bare.h5")
    assert code == 0, err
    assert f"converted {bare} (mcap, 2,403 messages" in out and "1,200 transitions" in out
    assert run_convert(capsys, "--bag", recorded["mcap"], "--out", tmp_path / "dir.h5")[0] == 0
    bare_data, dir_data = load_dataset(tmp_path / "bare.h5"), load_dataset(tmp_path / "dir.h5")
    np.testing.assert_array_equal(bare_data.observations, dir_data.observations)
    assert bare_data.attrs["bag_content_hash"] == dir_data.attrs["bag_content_hash"]


def test_a_folder_of_bags_becomes_one_dataset_without_joining_episodes(tmp_path, capsys):
    """Three recordings over the same time span (a simulator restarted for each): a bag
    directory in mcap, one in sqlite3 and a bare .mcap file, in one folder."""
    folder = tmp_path / "bags"
    runs = [np.linspace([x, 0.0], [x + 0.04, 0.0], 5) for x in (0.0, 1.0, -1.0)]
    small_bag(folder / "a", BOAT, runs[0])
    small_bag(folder / "b", BOAT, runs[1], storage="sqlite3")
    next(small_bag(tmp_path / "c", BOAT, runs[2]).glob("*.mcap")).rename(folder / "c.mcap")
    code, out, err = run_convert(capsys, "--bag", folder, "--out", tmp_path / "d.h5")
    assert code == 0, err
    assert "converted 3 bags (27 messages, content hash " in out and "episodes never joined across bags" in out
    assert f"  {folder / 'b'} (sqlite3, 9 messages" in out and "3 episode(s)" in out and "12 transitions" in out
    data = load_dataset(tmp_path / "d.h5")
    np.testing.assert_array_equal(data.timeouts.nonzero()[0], [3, 7, 11])
    np.testing.assert_allclose(data.observations[:, 0], np.concatenate([r[:-1, 0] for r in runs]), atol=1e-6)
    np.testing.assert_allclose(data.next_observations[:, 0], np.concatenate([r[1:, 0] for r in runs]), atol=1e-6)
    assert [Path(b["path"]).name for b in data.attrs["bags"]] == ["a", "b", "c.mcap"]
    # the same bags named one by one give the same dataset
    code, _, _ = run_convert(capsys, "--bag", folder / "a", folder / "b", folder / "c.mcap", "--out", tmp_path / "e.h5")
    assert code == 0 and load_dataset(tmp_path / "e.h5").attrs["bag_content_hash"] == data.attrs["bag_content_hash"]


@pytest.mark.parametrize("args, message", [
    (lambda r: [r["mcap"], r["sqlite3"]], "hold the same recording (content hash "),
    (lambda r: [r["mcap"], r["mcap"]], "is named twice"),
    (lambda r: [r["mcap"] / "missing"], "missing does not exist; pass a rosbag2 directory, a .mcap or .db3 file"),
])
def test_bag_lists_that_would_repeat_or_miss_data_are_refused(recorded, tmp_path, capsys, args, message):
    code, _, err = run_convert(capsys, "--bag", *args(recorded), "--out", tmp_path / "d.h5")
    assert code == 2 and message in err and "Traceback" not in err


POSE_MSG = "float32 x\nfloat32 y\nfloat32 theta\n\nfloat32 linear_velocity\nfloat32 angular_velocity\n"
TURTLE = boat_dict(**{"state.topic": "/turtle1/pose", "state.type": "turtlesim/msg/Pose", "state.stamp": "receive",
                      "state.fields": ["x", "y"],
                      "command": {"topic": "/boat/cmd_vel", "type": "geometry_msgs/msg/Twist", "stamp": "receive",
                                  "fields": ["linear.x", "linear.y"], "low": [-1.0, -1.0], "high": [1.0, 1.0]}})


def turtlesim_bag(path: Path, msg_dir: Path) -> Path:
    """A Humble-style sqlite3 bag of a custom type (turtlesim/msg/Pose) with no stored definitions."""
    pose = msg_dir / "turtlesim" / "msg" / "Pose.msg"
    pose.parent.mkdir(parents=True)
    pose.write_text(POSE_MSG)
    store = typestore("humble", [pose])
    twist = default_message(store, "geometry_msgs/msg/Twist")
    messages = []
    for k in range(6):
        t = SIM_EPOCH_NS + k * 5_000_000
        messages.append(("/turtle1/pose", t, store.types["turtlesim/msg/Pose"](0.1 * k, -0.1 * k, 0.0, 0.0, 0.0)))
        messages.append(("/boat/cmd_vel", t, twist))
    write_bag(path, {"/turtle1/pose": "turtlesim/msg/Pose", "/boat/cmd_vel": "geometry_msgs/msg/Twist"},
              messages, store, storage="sqlite3")
    with sqlite3.connect(next(path.glob("*.db3"))) as db:
        db.execute("DELETE FROM message_definitions")
        db.execute("UPDATE topics SET type_description_hash = ''")
    return path


def test_custom_types_of_bags_without_definitions_come_from_msg_files(tmp_path, capsys):
    bag = turtlesim_bag(tmp_path / "bag", tmp_path / "msgs")
    config = tmp_path / "turtle.yaml"
    config.write_text(yaml.safe_dump({"task": "turtle", "spec": TURTLE}))
    common = ["--bag", bag, "--config", config, "--typestore", "humble"]
    code, _, err = run_convert(capsys, *common, "--out", tmp_path / "d.h5")
    assert code == 2 and "Traceback" not in err and "KeyError" not in err
    assert ("stores no definition of turtlesim/msg/Pose (used by state topic /turtle1/pose), and the --typestore "
            "release does not have it either") in err
    assert "--msg path/to/turtlesim/msg/Pose.msg, or --msg a folder holding <package>/msg/*.msg" in err
    for msg in (tmp_path / "msgs", tmp_path / "msgs" / "turtlesim" / "msg" / "Pose.msg"):
        code, out, err = run_convert(capsys, *common, "--msg", msg, "--out", tmp_path / "d.h5")
        assert code == 0, err
        assert "5 transitions" in out
        np.testing.assert_allclose(load_dataset(tmp_path / "d.h5").observations[:, 1], -0.1 * np.arange(5), atol=1e-6)


def test_msg_files_must_say_their_package(tmp_path, capsys):
    (tmp_path / "Pose.msg").write_text(POSE_MSG)
    (tmp_path / "bad" / "turtlesim" / "msg").mkdir(parents=True)
    (tmp_path / "bad" / "turtlesim" / "msg" / "Pose.msg").write_text("float32 x\nint32[ y\n")
    for msg, message in ((tmp_path / "Pose.msg", "cannot tell the type of"),
                         (tmp_path / "bad", "is not a valid .msg definition"),
                         (tmp_path / "nothing", "--msg " + str(tmp_path / "nothing") + ": no .msg file there")):
        code, _, err = run_convert(capsys, "--bag", tmp_path, "--msg", msg, "--out", tmp_path / "d.h5")
        assert code == 2 and message in err, err


def test_header_stamps_in_sim_time_against_receive_times_are_named(tmp_path, capsys):
    """The simulator stamps odometry from /clock (0 s onwards); the bag records wall time."""
    def sim_stamped():
        for topic, t, msg in episode_messages(BOAT, typestore("kilted"), np.zeros((1, 4, 2)), np.zeros((1, 3, 2))):
            if topic == BOAT.state.topic:
                BOAT.state.set_stamp(msg, t - SIM_EPOCH_NS)
            yield topic, t, msg
    write_bag(tmp_path / "bag", {BOAT.state.topic: BOAT.state.type, BOAT.command.topic: BOAT.command.type},
              sim_stamped(), typestore("kilted"))
    code, _, err = run_convert(capsys, "--bag", tmp_path / "bag", "--out", tmp_path / "d.h5")
    assert code == 2 and "no transition survived" not in err
    assert ("the stamps of /boat/cmd_vel (command) (header stamps, 2023-11-14 22:13:20 to 2023-11-14 22:13:20 UTC: "
            "wall time) never overlap those of /boat/odom (odom) (header stamps, 0.000 s to 0.015 s since zero: "
            "sim time)") in err
    assert "`stamp: receive` on both" in err


def test_held_states_are_counted_in_the_summary(recorded, tmp_path, capsys):
    """States every 5 ms on a 2.5 ms grid: every other transition holds its state."""
    config = tmp_path / "fast.yaml"
    config.write_text(yaml.safe_dump({"task": "boat", "spec": boat_dict(control_period=0.0025)}))
    code, out, err = run_convert(capsys, "--bag", recorded["mcap"], "--config", config, "--out", tmp_path / "d.h5")
    assert code == 0, err
    data = load_dataset(tmp_path / "d.h5")
    held = int((data.observations == data.next_observations).all(axis=1).sum())
    assert held == len(data) // 2
    assert f"held states: {held:,} state (transitions whose next state is the same sample as their state)" in out


def write_odom_bag(path: Path, restamp, states: np.ndarray) -> Path:
    """A boat bag of episodes `states` [E, T+1, 2] whose odometry header stamps `restamp(t)` changes."""
    store = typestore("kilted")

    def messages():
        for topic, t, msg in episode_messages(BOAT, store, states, np.zeros((len(states), states.shape[1] - 1, 2))):
            if topic == BOAT.state.topic:
                BOAT.state.set_stamp(msg, restamp(t))
            yield topic, t, msg
    write_bag(path, {BOAT.state.topic: BOAT.state.type, BOAT.command.topic: BOAT.command.type}, messages(), store)
    return path


def test_one_bag_holding_runs_over_the_same_time_span_is_refused(tmp_path, capsys):
    """A simulator reset between episodes restarts its clock: header stamps go back to zero."""
    episode_ns = 11 * 5_000_000 + NS  # 11 states 5 ms apart, then the writer's 1 s pause
    bag = write_odom_bag(tmp_path / "bag", lambda t: (t - SIM_EPOCH_NS) % episode_ns, np.zeros((3, 11, 2)))
    code, _, err = run_convert(capsys, "--bag", bag, "--out", tmp_path / "d.h5")
    assert code == 2 and "ticks dropped: none" not in err
    assert ("time goes backwards on /boat/odom (odom): 20 sample(s) stamped before an earlier one, by up to "
            "0.050 s (more than its max_age 0.0125 s)") in err
    assert "Record each run into its own bag" in err and "`stamp: receive`" in err


def test_duplicate_stamps_with_different_values_are_refused_or_dropped_by_flag(tmp_path, capsys):
    # states 4 and 5 are stamped like state 3 (a stamp not set per message): three values for one time
    bag = write_odom_bag(tmp_path / "bag", lambda t: min(t, SIM_EPOCH_NS + 15_000_000),
                         np.linspace([0.0, 0.0], [0.1, 0.1], 6)[None])
    code, _, err = run_convert(capsys, "--bag", bag, "--out", tmp_path / "d.h5")
    assert code == 2 and "samples that share a stamp with a different value: 3 on /boat/odom (odom)" in err
    assert "pass --on-duplicate drop" in err
    code, out, err = run_convert(capsys, "--bag", bag, "--out", tmp_path / "d.h5", "--on-duplicate", "drop")
    assert code == 0, err
    assert "samples sharing a stamp with a different value: 3 odom (--on-duplicate drop)" in out
    assert "ticks dropped: 1 duplicate-stamp next odom state" in out and "2 transitions" in out
    data = load_dataset(tmp_path / "d.h5")
    assert not (data.observations == data.next_observations).all(axis=1).any()  # never s' = s from duplicates


@pytest.mark.parametrize("margin, share, warning", [
    ("-obstacle_clearance", "(0.0%)", "the margin is never positive"),      # the states stay far from the discs
    ("obstacle_clearance", "(100.0%)", "the margin is positive on every transition"),  # the sign flipped
    ("x - 0.045", "on 5 of 10 transitions (50.0%)", None),
])
def test_convert_prints_the_unsafe_share_and_warns_when_the_margin_never_or_always_flags(
        margin, share, warning, tmp_path, capsys):
    bag = small_bag(tmp_path / "bag", BOAT, np.linspace([0.0, 0.0], [0.1, 0.1], 11))
    config = tmp_path / "boat.yaml"
    config.write_text(yaml.safe_dump({"task": "boat", "spec": {**BOAT.to_dict(), "margin": margin}}))
    code, out, _ = run_convert(capsys, "--bag", bag, "--config", config, "--out", tmp_path / "d.h5")
    assert code == 0 and "safety margin > 0 (unsafe) on" in out and share in out
    assert (f"WARNING: {warning}" in out) if warning else "WARNING" not in out

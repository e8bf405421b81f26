"""Task spec: loading and validation, field paths, action scaling, message filling."""
import copy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pytest

from safefql_core.envs import boat
from safefql_core.tasks import BUILTIN, FieldPath, TaskSpec, TaskSpecError, resolve_spec, simulator_mismatch

BOAT_YAML = Path(__file__).resolve().parents[1] / "config" / "boat.yaml"


# The boat in the spec's short forms (one `state:` topic of raw fields, registered functions):
# what specs looked like before named features, and still load.
SHORT_BOAT = {
    "control_period": boat.DT, "max_age": 2.5 * boat.DT,
    "state": {"topic": "/boat/odom", "type": "nav_msgs/msg/Odometry", "stamp": "header",
              "fields": ["pose.pose.position.x", "pose.pose.position.y"]},
    "command": {**BUILTIN["boat"]["command"]},
    "reward": {"function": "boat.reward"}, "margin": {"function": "boat.margin"},
}


def boat_dict(**changes) -> dict:
    """The boat spec in short form with `section.key=value` style changes ('state.fields': [...])."""
    d = copy.deepcopy(SHORT_BOAT)
    for path, value in changes.items():
        *parents, key = path.split(".")
        target = d
        for p in parents:
            target = target[p]
        if value is None:
            del target[key]
        else:
            target[key] = value
    return d


def odometry(x: float = 0.0, y: float = 0.0) -> NS:
    """An attribute-access message shaped like nav_msgs/Odometry (enough for the spec)."""
    return NS(header=NS(stamp=NS(sec=0, nanosec=0)),
              pose=NS(pose=NS(position=NS(x=x, y=y, z=0.0)), covariance=[0.0] * 36))


def test_the_builtin_boat_spec_is_config_boat_yaml_and_round_trips():
    """One file holds the boat's spec: the package's task_configs is the repository's config/
    (a link, installed as package data), and the simulator's period is the spec's (its goal
    and discs: the next test)."""
    from safefql_core.tasks import TASK_CONFIGS
    assert (TASK_CONFIGS / "boat.yaml").resolve() == BOAT_YAML.resolve()
    spec = TaskSpec.builtin("boat")
    assert spec == TaskSpec.load(BOAT_YAML)
    assert spec.name == "boat" and spec.obs_dim == 2 and spec.act_dim == 2
    assert spec.control_period == boat.DT and spec.max_age == pytest.approx(2.5 * boat.DT)
    assert TaskSpec.from_dict(spec.to_dict(), "boat") == spec


def test_the_boats_terms_and_the_short_forms_registered_functions_agree():
    """The built-in boat's reward and margin are expressions over two terms; the short form
    (raw fields, named functions) observes the same values and gives the same numbers."""
    spec, short = TaskSpec.builtin("boat"), TaskSpec.from_dict(boat_dict(), "boat")
    assert spec.observation_names == ["x", "y"]
    assert short.observation_names == ["pose_pose_position_x", "pose_pose_position_y"]
    assert short.state_inputs() == ["state"] and short.to_dict()["inputs"]["state"]["topic"] == "/boat/odom"
    obs = np.random.default_rng(0).uniform(boat.LOW, boat.HIGH, (200, 2))
    for s, name in ((spec, "odom"), (short, "state")):
        reward, margin = s.signals({name: obs})
        np.testing.assert_allclose(reward, boat.reward(obs), atol=1e-12)
        np.testing.assert_allclose(margin, boat.margin(obs), atol=1e-12)
        np.testing.assert_array_equal(s.observations({name: obs}), obs)


def test_field_paths_read_and_write_nested_fields_and_indices():
    msg = odometry(1.5, -2.0)
    spec = TaskSpec.builtin("boat")
    np.testing.assert_array_equal(spec.observation({"odom": msg}), [1.5, -2.0])
    spec.fill_state(msg, np.array([0.25, 0.75]))
    assert (msg.pose.pose.position.x, msg.pose.pose.position.y) == (0.25, 0.75)
    cov = FieldPath("pose.covariance[7]")
    cov.set(msg, 3.0)
    assert cov.get(msg) == 3.0 and msg.pose.covariance[7] == 3.0
    grid = NS(data=[[1.0, 2.0], [3.0, 4.0]])
    assert FieldPath("data[1][0]").get(grid) == 3.0


@pytest.mark.parametrize("path, message", [
    ("pose.pose.positon.x", r"no 'positon' at pose\.pose, which has \['position'\]"),
    ("pose.covariance[40]", r"index \[40\] is out of range for 'covariance' \(length 36\)"),
    ("pose.pose", "not a number; extend the path"),
])
def test_bad_field_path_names_the_problem(path, message):
    with pytest.raises(TaskSpecError, match=message):
        FieldPath(path).get(odometry())


def test_writing_a_missing_field_fails_instead_of_adding_it():
    msg = odometry()
    with pytest.raises(TaskSpecError, match="no 'positon'"):
        FieldPath("pose.pose.positon.x").set(msg, 1.0)
    assert not hasattr(msg.pose.pose, "positon")


def test_action_scaling_round_trips_and_fill_command_clips_and_refuses_nan():
    spec = TaskSpec.from_dict(boat_dict(**{"command.low": [0.0, -2.0], "command.high": [4.0, 2.0]}), "boat")
    raw = np.array([3.0, -1.0])
    np.testing.assert_allclose(spec.scale_action(raw), [0.5, -0.5])
    np.testing.assert_allclose(spec.unscale_action(spec.scale_action(raw)), raw)
    msg = NS(twist=NS(linear=NS(x=0.0, y=0.0, z=0.0)))
    spec.fill_command(msg, np.array([5.0, -0.5]))  # beyond +1: clipped to the upper bound
    assert (msg.twist.linear.x, msg.twist.linear.y) == (4.0, -1.0)
    np.testing.assert_allclose(spec.action(msg), [1.0, -0.5])
    with pytest.raises(TaskSpecError, match="non-finite action"):
        spec.fill_command(msg, np.array([np.nan, 0.0]))


def test_reward_from_a_topic_is_an_input_that_only_the_reward_reads():
    topic = {"topic": "/boat/reward", "type": "std_msgs/msg/Float64", "field": "data"}
    spec = TaskSpec.from_dict(boat_dict(reward=topic), "boat")
    assert set(spec.topic_streams()) == {"state", "command", "reward"}
    assert spec.state_inputs() == ["state"] and spec.obs_dim == 2  # aligned as a signal, not observed
    full = spec.to_dict()
    assert full["reward"] == "reward"
    assert full["inputs"]["reward"] == {"topic": "/boat/reward", "type": "std_msgs/msg/Float64", "stamp": "receive"}
    assert {"name": "reward", "input": "reward", "field": "data", "observe": False} in full["features"]
    reward, _ = spec.signals({"state": np.zeros((2, 2)), "reward": np.array([[3.0], [-1.0]])})
    np.testing.assert_array_equal(reward, [3.0, -1.0])


def test_stream_max_age_and_command_hold_default_to_max_age_and_round_trip():
    spec = TaskSpec.builtin("boat")
    assert spec.max_age_of("odom") == spec.max_age_of("command") == spec.max_age
    assert "hold" not in spec.to_dict()["command"] and "max_age" not in spec.to_dict()["inputs"]["odom"]
    timed = TaskSpec.from_dict(boat_dict(**{"state.max_age": 0.02, "command.hold": 0.6}), "boat")
    assert (timed.max_age_of("state"), timed.max_age_of("command")) == (0.02, 0.6)
    assert timed.to_dict()["command"]["hold"] == 0.6 and timed.to_dict()["inputs"]["state"]["max_age"] == 0.02
    assert TaskSpec.from_dict(timed.to_dict(), "boat") == timed


@pytest.mark.parametrize("changes, message", [
    ({"reward": {"function": "boat.rewrd"}}, r"unknown function 'boat.rewrd'; registered functions: \['boat.margin'"),
    ({"command.low": [1.0, -1.0]}, r"bounds are empty: \['twist.linear.x: low 1.0 >= high 1.0'\]"),
    ({"command.high": [1.0]}, r"'command.high' must be a list of 2 numbers"),
    ({"state.fields": []}, r"'state.fields' must be a non-empty list"),
    ({"state.fields": "pose.pose.position.x"}, r"'state.fields' must be a non-empty list"),
    ({"state.fields": ["pose..x"]}, "malformed"),
    ({"state.stamp": "header_stamp"}, r"'inputs.state.stamp' must be one of \['header', 'receive'\]"),
    ({"state.type": "Odometry"}, "full ROS 2 type like nav_msgs/msg/Odometry"),
    ({"state.topic": "boat/odom"}, "absolute topic name"),
    ({"state.frame": "map"}, r"'state' has unknown key\(s\) \['frame'\]"),
    ({"features": []}, "has `state:` and `inputs:`/`features:`; use one form"),
    ({"max_age": 0.001}, "shorter than control_period"),
    ({"command.hold": 0.001}, r"spec command.hold \(0.001\) is shorter than control_period"),
    ({"state.max_age": 0.001}, r"spec inputs.state.max_age \(0.001\) is shorter than control_period"),
    ({"state.max_age": "soon"}, r"spec 'inputs.state.max_age' must be a number of seconds"),
    ({"command.hold": -1}, r"spec 'command.hold' must be a positive number"),
    ({"command.max_age": 0.5}, r"'command.max_age' is not a key: a command's age limit is its `hold`"),
    ({"control_period": -0.005}, "positive number of seconds"),
    ({"margin": None}, r"'spec' lacks key\(s\) \['margin'\]"),
    ({"margin": {"value": 1}}, "an expression must be text or a number"),
    ({"margin": "min(x"}, "is not a valid expression"),
    ({"margin": "pose_pose_position_z"}, r"unknown name\(s\) \['pose_pose_position_z'\]"),
    ({"state.fields": ["pose.pose.position.x"]},
     r"'boat.reward' is written for a 2-field observation, but the spec observes 1 value\(s\)"),
])
def test_invalid_specs_are_refused_with_the_fix(changes, message):
    with pytest.raises(TaskSpecError, match=message):
        TaskSpec.from_dict(boat_dict(**changes), "boat")


def test_config_without_spec_section_names_the_fix(tmp_path):
    (tmp_path / "t.yaml").write_text("task: boat\nsafefql: {steps: 10}\n")
    with pytest.raises(TaskSpecError, match="no `spec:` section"):
        TaskSpec.load(tmp_path / "t.yaml")
    with pytest.raises(TaskSpecError, match="not found"):
        TaskSpec.load(tmp_path / "none.yaml")


def test_works_on_rclpy_messages():
    """The node will fill rclpy messages through the same spec: same code, same features."""
    geometry_msgs = pytest.importorskip("geometry_msgs.msg")
    nav_msgs = pytest.importorskip("nav_msgs.msg")
    spec = TaskSpec.builtin("boat")
    cmd = spec.fill_command(geometry_msgs.TwistStamped(), np.array([0.5, -2.0]))
    assert (cmd.twist.linear.x, cmd.twist.linear.y) == (0.5, -1.0)
    spec.command.set_stamp(cmd, 5_000_000_001)
    assert (cmd.header.stamp.sec, cmd.header.stamp.nanosec, cmd.header.frame_id) == (5, 1, "odom")
    state = spec.fill_state(nav_msgs.Odometry(), np.array([1.0, 2.0]))
    spec.state.set_stamp(state, 3_000_000_007)
    assert (state.header.stamp.sec, state.header.stamp.nanosec) == (3, 7)
    assert spec.state.stamp_ns(state, receive_ns=0) == 3_000_000_007
    np.testing.assert_array_equal(spec.observation({"odom": state}), [1.0, 2.0])
    with pytest.raises(TaskSpecError, match=r"no 'positon' at pose\.pose, which has \['position', 'orientation'\]"):
        FieldPath("pose.pose.positon.x").get(state)


def test_core_modules_import_neither_rosbags_nor_rclpy():
    """ARCHITECTURE.md principle 1: the spec and the alignment are ROS-free."""
    code = ("import sys, safefql_core.tasks, safefql_core.alignment; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'rosbags', 'rclpy'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_bundle_without_a_spec_is_refused_unless_its_task_has_a_builtin_one():
    assert TaskSpec.of_task({"name": "boat"}) == TaskSpec.builtin("boat")  # bundles exported before specs travelled
    with pytest.raises(TaskSpecError, match="records no task spec, and task 'point_goal' has no built-in one"):
        TaskSpec.of_task({"name": "point_goal"})


def test_resolve_spec_takes_a_matching_config_and_refuses_a_conflict_showing_both():
    spec = TaskSpec.builtin("boat")
    meta = {"task": {"name": "boat", "spec": spec.to_dict()}, "obs_dim": 2, "act_dim": 2}
    assert resolve_spec(meta) == spec
    renamed = TaskSpec.from_dict({**BUILTIN["boat"], "max_age": 0.02, "inputs": {"odom": {
        "topic": "/b2/odom", "type": "nav_msgs/msg/Odometry", "stamp": "header"}}}, "boat")
    assert resolve_spec(meta, renamed) == renamed
    slower = TaskSpec.from_dict({**BUILTIN["boat"], "control_period": 0.01, "max_age": 0.025}, "boat")
    with pytest.raises(TaskSpecError, match=r"^--config does not match .*: control_period: the bundle 0.005, "
                                            r"--config 0.01\."):
        resolve_spec(meta, slower)
    with pytest.raises(TaskSpecError, match="networks take 3 and give 2"):
        resolve_spec({**meta, "obs_dim": 3})


@pytest.mark.parametrize("task, spec, reason", [
    ("boat", None, None),                                       # a simulator's own dataset records no spec
    ("boat", TaskSpec.builtin("boat").to_dict(), None),
    ("boat", boat_dict(), None),                                # the short form: other names, same robot
    ("boat", boat_dict(command={"topic": "/boat/cmd_vel", "type": "geometry_msgs/msg/Twist", "stamp": "receive",
                                "fields": ["linear.x", "linear.y"], "low": [-1.0, -1.0], "high": [1.0, 1.0]}),
     None),                                                     # the Twist of specs before TwistStamped
    ("boat", boat_dict(**{"state.topic": "/other/odom"}), "topics: simulator ['/boat/odom', '/boat/cmd_vel'], "
                                                          "spec ['/other/odom', '/boat/cmd_vel']"),
    ("boat", boat_dict(**{"command.high": [2.0, 2.0]}), "command.high: simulator [1.0, 1.0], spec [2.0, 2.0]"),
    ("boat", {**BUILTIN["boat"], "reward": "-2 * goal_distance"}, "reward or margin: simulator -goal_distance"),
    ("rover", TaskSpec.builtin("boat").to_dict(), "task 'rover' is defined by its spec alone"),
])
def test_only_the_simulators_own_robot_counts_as_simulated(task, spec, reason):
    got = simulator_mismatch(task, spec)
    assert (got is None) if reason is None else (reason in got)

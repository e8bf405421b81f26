"""Message features (yaw, LaserScan sectors, JointState by name) and a spec with several inputs."""
import math
from types import SimpleNamespace as NS

import numpy as np
import pytest

from safefql_core.features import FieldPath, Joint, Sectors, Yaw
from safefql_core.tasks import TaskSpec, TaskSpecError

INF, NAN = math.inf, math.nan


def quaternion(yaw: float, roll: float = 0.0) -> NS:
    """ZYX (yaw, then roll about x) as x, y, z, w."""
    cy, sy, cr, sr = math.cos(yaw / 2), math.sin(yaw / 2), math.cos(roll / 2), math.sin(roll / 2)
    return NS(x=sr * cy, y=sr * sy, z=cr * sy, w=cr * cy)


@pytest.mark.parametrize("yaw", [0.0, 0.5, -2.0, 3.1, -3.1])
def test_yaw_of_a_quaternion_ignores_roll(yaw):
    msg = NS(pose=NS(orientation=quaternion(yaw, roll=0.3)))
    assert Yaw(FieldPath("pose.orientation")).values(msg)[0] == pytest.approx(yaw, abs=1e-12)


def test_yaw_of_something_else_names_the_path():
    with pytest.raises(TaskSpecError, match="'pose' of SimpleNamespace is not a quaternion"):
        Yaw(FieldPath("pose")).values(NS(pose=NS(x=1.0)))


def scan(ranges, low=0.1, high=5.0) -> NS:
    return NS(ranges=np.array(ranges, dtype=np.float32), range_min=low, range_max=high)


def test_laserscan_sectors_follow_rep_117():
    # sectors of 3 beams: plain; +inf (nothing within range_max) beside a return; -inf (too close);
    # NaN and out-of-range values are ignored; only invalid readings -> NaN (untrusted)
    ranges = [1.0, 2.0, 0.5, INF, 4.0, INF, -INF, 3.0, 2.0, NAN, 0.05, 9.0, NAN, 0.01, 7.0, INF, INF, INF]
    got = Sectors(6).values(scan(ranges))
    np.testing.assert_allclose(got, [0.5, 4.0, 0.1, np.nan, np.nan, 5.0], equal_nan=True)
    np.testing.assert_allclose(Sectors(2).values(scan([3.0, NAN, 1.0, 2.0])), [3.0, 1.0])
    with pytest.raises(TaskSpecError, match="LaserScan with 4 beams cannot make 5 sectors"):
        Sectors(5).values(scan([1.0] * 4))


def test_joint_entries_are_found_by_name_whatever_their_order():
    msg = NS(name=["wrist", "elbow"], position=[0.1, -0.7], velocity=[], effort=[2.0, 3.0])
    assert Joint("elbow").values(msg) == [-0.7] and Joint("wrist", "effort").values(msg) == [2.0]
    with pytest.raises(TaskSpecError, match=r"joint 'knee' is not in this SimpleNamespace, which has \['wrist', 'elbow'\]"):
        Joint("knee").values(msg)
    with pytest.raises(TaskSpecError, match="has 0 velocity value"):
        Joint("elbow", "velocity").values(msg)


ROBOT = {
    "control_period": 0.1, "max_age": 0.25,
    "inputs": {"odom": {"topic": "/odom", "type": "nav_msgs/msg/Odometry", "stamp": "header"},
               "scan": {"topic": "/scan", "type": "sensor_msgs/msg/LaserScan", "stamp": "header", "max_age": 0.4},
               "joints": {"topic": "/joint_states", "type": "sensor_msgs/msg/JointState", "stamp": "header"}},
    "features": [
        {"name": "x", "input": "odom", "field": "pose.pose.position.x"},
        {"name": "y", "input": "odom", "field": "pose.pose.position.y"},
        {"name": "heading", "input": "odom", "yaw": "pose.pose.orientation", "encode": "sincos"},
        {"name": "turns", "input": "odom", "field": "twist.twist.angular.z", "wrap": True, "observe": False},
        {"name": "lidar", "input": "scan", "sectors": 3},
        {"name": "pan", "input": "joints", "joint": "pan"},
        {"name": "to_goal_x", "expr": "2 - x"},
    ],
    "terms": {"clear": {"kind": "lidar_clearance", "ranges": "lidar", "radius": 0.2}},
    "command": {"topic": "/cmd_vel", "type": "geometry_msgs/msg/TwistStamped", "fields": ["twist.linear.x"],
                "low": [-0.5], "high": [0.5]},
    "reward": "-hypot(to_goal_x, y) - 0.01 * abs(turns)",
    "margin": "-min(clear, 0.5 - abs(pan))",
}


def test_a_spec_with_three_inputs_reads_names_and_round_trips():
    spec = TaskSpec.from_dict(ROBOT, "rover")
    assert spec.observation_names == ["x", "y", "heading_sin", "heading_cos", "lidar_0", "lidar_1", "lidar_2",
                                      "pan", "to_goal_x"]
    assert spec.state_inputs() == ["odom", "scan", "joints"] and spec.max_age_of("scan") == 0.4
    assert TaskSpec.from_dict(spec.to_dict(), "rover") == spec
    odom = NS(header=NS(stamp=NS(sec=1, nanosec=0)),
              pose=NS(pose=NS(position=NS(x=0.5, y=1.0), orientation=quaternion(math.pi / 2))),
              twist=NS(twist=NS(angular=NS(z=7.0))))
    msgs = {"odom": odom, "scan": scan([1.0, 2.0, 0.3, INF, 2.5, 0.9]),
            "joints": NS(name=["tilt", "pan"], position=[0.0, 0.25], velocity=[], effort=[])}
    np.testing.assert_allclose(spec.observation(msgs), [0.5, 1.0, 1.0, 0.0, 1.0, 0.3, 0.9, 0.25, 1.5], atol=1e-12)
    raw = {name: dict(spec.inputs)[name].read(m)[None] for name, m in msgs.items()}
    reward, margin = spec.signals(raw)
    assert reward[0] == pytest.approx(-math.hypot(1.5, 1.0) - 0.01 * abs(7.0 - 2 * math.pi))
    assert margin[0] == pytest.approx(-min(0.3 - 0.2, 0.5 - 0.25))


@pytest.mark.parametrize("change, message", [
    ({"features": ROBOT["features"] + [{"name": "x", "input": "odom", "field": "pose.pose.position.z"}]},
     r"the name\(s\) \['x'\] are used twice"),
    ({"features": ROBOT["features"] + [{"name": "z", "input": "imu", "field": "a"}]},
     r"read input\(s\) \['imu'\] that `inputs:` does not declare"),
    ({"inputs": {**ROBOT["inputs"], "imu": {"topic": "/imu", "type": "sensor_msgs/msg/Imu"}}},
     "input 'imu' is read by no feature"),
    ({"features": [{"name": "x", "input": "odom", "yaw": "pose.pose.orientation", "wrap": True}]},
     r"\['wrap'\] do not apply to a yaw feature"),
    ({"features": [{"name": "lidar.0", "input": "scan", "sectors": 3}]}, "must be an identifier"),
    ({"features": [{"name": "d", "expr": "x", "input": "odom"}]}, "drop `input:`"),
    ({"margin": "lidar"}, "gives 3 values per tick, not one; reduce a group"),
    ({"margin": "-min(clear, nope)"}, r"unknown name\(s\) \['nope'\]"),
    ({"terms": {"clear": {"kind": "lidar_clearance", "ranges": "lidar"}}}, r"lacks \['radius'\]"),
    ({"features": [{"name": "lidar", "input": "scan", "sectors": 0}]}, "must be a positive whole number"),
    ({"features": [{"name": "d", "expr": "x + 1"}, *ROBOT["features"]]},
     r"feature 'd': its expr uses \['x'\], which no feature before it defines"),
    ({"terms": {"clear": {"kind": "lidar_clearance", "ranges": "sonar", "radius": 0.2}}},
     r"term 'clear' reads \['sonar'\], which no feature defines"),
    ({"terms": {"pan": {"kind": "speed_above", "velocity": "x", "limit": 1}}}, "term 'pan' has the name of a feature"),
    ({"inputs": {**ROBOT["inputs"], "command": ROBOT["inputs"]["odom"]}}, "other than 'command'"),
])
def test_bad_inputs_and_features_are_refused_with_the_fix(change, message):
    with pytest.raises(TaskSpecError, match=message):
        TaskSpec.from_dict({**ROBOT, **change}, "rover")


def test_non_finite_reward_is_refused_naming_the_tick():
    spec = TaskSpec.from_dict({**ROBOT, "reward": "log(x)"}, "rover")
    raw = {"odom": np.array([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]]), "scan": np.ones((2, 3)), "joints": np.zeros((2, 1))}
    with pytest.raises(TaskSpecError, match=r"reward 'log\(x\)' is not finite at 1 tick\(s\), first at tick 1"):
        spec.signals(raw)


def test_features_read_rclpy_messages_the_same_way():
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    spec = TaskSpec.from_dict(ROBOT, "rover")
    msg = sensor_msgs.LaserScan(range_min=0.1, range_max=5.0, ranges=[1.0, INF, 0.3, NAN, 2.5, 0.9])
    np.testing.assert_allclose(dict(spec.inputs)["scan"].read(msg), [1.0, 0.3, 0.9], rtol=1e-6)
    joints = sensor_msgs.JointState(name=["tilt", "pan"], position=[0.0, 0.25])
    assert dict(spec.inputs)["joints"].read(joints).tolist() == [0.25]


def test_only_plain_fields_of_one_input_can_be_written_back():
    with pytest.raises(TaskSpecError, match="not one plain field per value of one input"):
        TaskSpec.from_dict(ROBOT, "rover").fill_state(NS(), np.zeros(9))

"""safefql_ros.command: the one place a [-1, 1] action becomes the spec's command message."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from safefql_core.tasks import TaskSpec, TaskSpecError  # noqa: E402
from safefql_ros.command import CommandWriter  # noqa: E402

TWIST = {"topic": "/boat/cmd_vel", "type": "geometry_msgs/msg/Twist", "stamp": "receive",
         "fields": ["linear.x", "linear.y"], "low": [-1.0, -1.0], "high": [1.0, 1.0]}


def spec_with(command: dict) -> TaskSpec:
    """The boat's spec with a headerless Twist command, changed by `command`."""
    d = TaskSpec.builtin("boat").to_dict()
    d["command"] = {**TWIST, **command}
    return TaskSpec.from_dict(d, "boat")


def test_twist_unscaled_and_headerless():
    msg = CommandWriter(spec_with({}))(np.array([0.5, -2.0]), 5)
    assert type(msg).__name__ == "Twist" and (msg.linear.x, msg.linear.y) == (0.5, -1.0)


def test_twist_stamped_gets_stamp_and_frame():
    writer = CommandWriter(spec_with({"type": "geometry_msgs/msg/TwistStamped", "stamp": "header",
                                      "frame_id": "base_link", "fields": ["twist.linear.x", "twist.angular.z"],
                                      "low": [0.0, -2.0], "high": [1.0, 2.0]}))
    msg = writer(np.array([1.0, -0.5]), 3_000_000_007)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (3, 7, "base_link")
    assert (msg.twist.linear.x, msg.twist.angular.z) == (1.0, -1.0)


def test_actuator_array_is_sized_from_the_spec():
    writer = CommandWriter(spec_with({"topic": "/thrusters", "type": "std_msgs/msg/Float64MultiArray",
                                      "fields": ["data[2]", "data[0]"]}))
    msg = writer(np.array([1.0, -1.0]), 0)
    assert list(msg.data) == [-1.0, 0.0, 1.0]


def test_non_finite_action_is_never_written():
    with pytest.raises(TaskSpecError, match="non-finite"):
        CommandWriter(TaskSpec.builtin("boat"))(np.array([np.nan, 0.0]), 0)


def test_frame_needs_a_header_stamped_stream():
    with pytest.raises(TaskSpecError, match=r"command\.frame_id' must be a frame name .* `stamp: header`"):
        spec_with({"frame_id": "base_link"})  # Twist, stamp: receive
    assert spec_with({"type": "geometry_msgs/msg/TwistStamped", "stamp": "header", "frame_id": "base_link"}) \
        .to_dict()["command"]["frame_id"] == "base_link"

"""The command message of a task spec, built in one place (ROS_CONVENTIONS.md, "Control node").

Robots take commands in several shapes: `geometry_msgs/Twist` (headerless), the stamped
`geometry_msgs/TwistStamped` that Jazzy's diff_drive_controller and Nav2 expect (header.stamp
= send time, header.frame_id = the spec's command `frame_id`, e.g. `base_link`), or an
actuator array such as `std_msgs/Float64MultiArray` (fields `data[0]`, `data[1]`, ...). The
spec says which (`command.type`, `command.fields`, `command.stamp: header`,
`command.frame_id`); this writer turns a [-1, 1] action into that message. Variable-length
arrays start empty in a fresh message, so they are sized from the highest index the spec
writes before the fields are set.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from safefql_core.tasks import FieldPath, TaskSpec
from safefql_ros.node_tools import message_class


def _array_sizes(fields: tuple[FieldPath, ...]) -> dict[tuple[tuple[str, tuple[int, ...]], ...], int]:
    """For each field path that ends in an index (`data[3]`), the path of its array and the
    length the array needs (highest index + 1)."""
    sizes: dict[tuple[tuple[str, tuple[int, ...]], ...], int] = {}
    for path in fields:
        *parents, (name, indices) = path.steps
        if len(indices) == 1:
            key = (*parents, (name, ()))
            sizes[key] = max(sizes.get(key, 0), indices[0] + 1)
    return sizes


class CommandWriter:
    """`writer(action, stamp_ns)`: the spec's command message for a [-1, 1] action, stamped
    (and framed) when the spec's command stream is header-stamped. A non-finite action raises
    TaskSpecError (`TaskSpec.fill_command`): a NaN never reaches an actuator."""

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        self.cls = message_class(spec.command.type)
        self.arrays = _array_sizes(spec.command.fields)

    def __call__(self, action: np.ndarray, stamp_ns: int) -> Any:
        msg = self.cls()
        for steps, size in self.arrays.items():
            try:
                parent = msg
                for name, indices in steps[:-1]:
                    parent = getattr(parent, name)
                    for i in indices:
                        parent = parent[i]
                if len(getattr(parent, steps[-1][0])) < size:
                    setattr(parent, steps[-1][0], [0.0] * size)
            except (AttributeError, AssertionError, IndexError, TypeError):
                pass  # a path that does not fit the type: fill_command names the problem
        self.spec.fill_command(msg, action)
        self.spec.command.set_stamp(msg, stamp_ns)
        return msg

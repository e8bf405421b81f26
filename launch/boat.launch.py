"""Boat simulator + SafeFQL controller, for `ros2 launch` on a full ROS 2 install.

    ros2 launch safefql_ros boat.launch.py bundle:=/path/to/bundle [namespace:=demo]

The nodes and their parameters come from `safefql_ros.description.boat`, the same
description `safefql-launch boat` (the pip-only launcher) starts, so both run the same thing.
"""
from safefql_ros import description
from safefql_ros.launch_file import launch_description

ARGUMENTS = {  # name: (default, None = required; description)
    "bundle": (None, "Policy bundle directory (python -m offline_train.export)"),
    "params_file": (str(description.default_params_file()), "Node parameters YAML, keyed by node name"),
    "use_sim_time": ("false", "Run every node on /clock (something else must publish it)"),
    "namespace": ("", "Namespace for the nodes and their topics (only /diagnostics and /clock stay global)"),
    "autostart": ("true", "Configure and activate the controller at start (lifecycle manager)"),
    "remappings": ("", "Comma-separated from:=to topic remappings for every node, e.g. boat/cmd_vel:=cmd_vel"),
}


def _setup(arg: dict[str, str]) -> list[description.NodeDescription]:
    return description.boat(bundle=arg["bundle"], params_file=arg["params_file"],
                            use_sim_time=description.as_bool(arg["use_sim_time"]), namespace=arg["namespace"],
                            autostart=description.as_bool(arg["autostart"]),
                            remappings=description.parse_remappings(arg["remappings"]))


def generate_launch_description():
    return launch_description(ARGUMENTS, _setup)

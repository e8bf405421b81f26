"""IR-SIM diff-drive robot + SafeFQL controller, for `ros2 launch` on a full ROS 2 install.

    ros2 launch safefql_ros diffdrive.launch.py bundle:=/path/to/bundle [namespace:=/robot1]

The nodes and their parameters come from `safefql_ros.description.diffdrive`, the same
description `safefql-launch diffdrive` (the pip-only launcher) starts, so both run the same
thing. Both nodes run in the robot's namespace: the simulator's relative odom, scan and
cmd_vel are the topics the bundle's task spec names (/diffdrive/... for config/diffdrive.yaml).
"""
from safefql_ros import description
from safefql_ros.launch_file import launch_description

ARGUMENTS = {  # name: (default, None = required; description)
    "bundle": (None, "Policy bundle directory (python -m offline_train.fit --bag ... --config config/diffdrive.yaml)"),
    "params_file": (str(description.default_params_file(description.DIFFDRIVE_PARAMS_FILE)),
                    "Node parameters YAML, keyed by node name"),
    "use_sim_time": ("false", "Run every node on /clock (something else must publish it)"),
    "namespace": (description.DIFFDRIVE_NAMESPACE, "The robot's namespace (its topics are relative to it)"),
    "autostart": ("true", "Configure and activate the controller at start (lifecycle manager)"),
    "remappings": ("", "Comma-separated from:=to topic remappings for every node, e.g. cmd_vel:=cmd_vel_safe"),
}


def _setup(arg: dict[str, str]) -> list[description.NodeDescription]:
    return description.diffdrive(bundle=arg["bundle"], params_file=arg["params_file"],
                                 use_sim_time=description.as_bool(arg["use_sim_time"]), namespace=arg["namespace"],
                                 autostart=description.as_bool(arg["autostart"]),
                                 remappings=description.parse_remappings(arg["remappings"]))


def generate_launch_description():
    return launch_description(ARGUMENTS, _setup)

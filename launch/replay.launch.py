"""Replay a bag into the SafeFQL controller and record what it decides, for `ros2 launch`.

    ros2 launch safefql_ros replay.launch.py bundle:=bundle/ bag:=run1_bag/ output:=run1_replayed/

The bag player publishes /clock and leaves the recorded command topic out; the controller
runs on sim time (the bag's stamps are old: on the wall clock every state would be stale);
the recorder writes the controller's command, safety signals, mode and /diagnostics. The
launch shuts down when the player has played the whole bag. The nodes come from
`safefql_ros.description.replay`, as for `safefql-launch replay`.
"""
from safefql_ros import description
from safefql_ros.launch_file import launch_description

ARGUMENTS = {  # name: (default, None = required; description)
    "bundle": (None, "Policy bundle directory (python -m offline_train.export)"),
    "bag": (None, "rosbag2 directory to play (mcap or sqlite3)"),
    "output": (None, "Directory of the bag to record the controller's outputs into (must not exist)"),
    "rate": ("1.0", "Playback rate (1.0 = recorded speed)"),
    "params_file": (str(description.default_params_file()), "Node parameters YAML, keyed by node name"),
    "use_sim_time": ("true", "Controller and recorder on the player's /clock (false: every old state is stale)"),
    "namespace": ("", "Namespace for the nodes and their topics (only /diagnostics and /clock stay global)"),
    "autostart": ("true", "Configure and activate the controller at start (lifecycle manager)"),
    "remappings": ("", "Comma-separated from:=to topic remappings for every node, e.g. boat/cmd_vel:=cmd_vel"),
}


def _setup(arg: dict[str, str]) -> list[description.NodeDescription]:
    return description.replay(bundle=arg["bundle"], bag=arg["bag"], output=arg["output"], rate=float(arg["rate"]),
                              params_file=arg["params_file"], namespace=arg["namespace"],
                              autostart=description.as_bool(arg["autostart"]),
                              remappings=description.parse_remappings(arg["remappings"]),
                              use_sim_time=description.as_bool(arg["use_sim_time"]))


def generate_launch_description():
    return launch_description(ARGUMENTS, _setup)

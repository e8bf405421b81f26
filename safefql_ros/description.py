"""Which nodes a setup starts, with which parameters: the one description behind both
`launch/*.launch.py` (for `ros2 launch` on a full ROS 2 install) and `safefql-launch` (the
pip-only launcher, safefql_ros/launcher.py), so the two cannot drift apart.

Pure Python on purpose — no rclpy, no launch imports — so a launch file can import it at
`ros2 launch` time and the launcher can build command lines from it without a ROS graph.

Setups:
- `boat`: the boat simulator and the controller, optionally an episode monitor that ends the
  run after N episodes (it needs the simulator started paused, see boat_sim's `start_paused`).
- `diffdrive`: the IR-SIM diff-drive robot (safefql_core.envs.diffdrive) and the controller,
  optionally an episode monitor as the boat's, all in the robot's namespace (default
  /diffdrive): the simulator's relative `odom`, `scan`, `cmd_vel` are the topics
  config/diffdrive.yaml names. Node parameters from config/diffdrive_nodes.yaml.
- `replay`: bag player (publishes /clock, leaves the recorded command out) → controller on
  sim time (the bag's stamps are old: against the wall clock every state would be stale) →
  recorder of the controller's outputs. The run ends when the player is done.

The controller is a managed (lifecycle) node: every setup also starts
`safefql_lifecycle_manager`, which configures and activates it (`autostart`, on by default,
as in Nav2). Topic names are relative, so `namespace` isolates a setup (only /diagnostics and
/clock are global); `remappings` (from, to) pairs apply to every node of the setup.

Every node also reads `params_file` (default: config/boat_nodes.yaml, installed or in the
repository); the explicit parameters here are applied after it, so they win.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safefql_core.tasks import TaskSpec

PACKAGE = "safefql_ros"
PARAMS_FILE = "boat_nodes.yaml"
DIFFDRIVE_PARAMS_FILE = "diffdrive_nodes.yaml"
DIFFDRIVE_NAMESPACE = "/diffdrive"  # safefql_core.envs.diffdrive_messages.NAMESPACE, the bags' and YAML's
# Executable (console script, setup.py) == node name -> python module.
MODULES = {
    "boat_sim": "safefql_ros.boat_sim",
    "diffdrive_sim": "safefql_ros.diffdrive_sim",
    "safefql_controller": "safefql_ros.controller",
    "episode_monitor": "safefql_ros.episode_monitor",
    "safefql_player": "safefql_ros.player",
    "safefql_recorder": "safefql_ros.recorder",
    "safefql_lifecycle_manager": "safefql_ros.lifecycle_manager",
}
# Set by `safefql-launch` in its nodes' environment: its pid (node_tools.die_with_launcher).
LAUNCHER_PID_ENV = "SAFEFQL_LAUNCHER_PID"
CONTROLLER = "safefql_controller"
LIFECYCLE_MANAGER = "safefql_lifecycle_manager"
CONTROLLER_OUTPUTS = ("safety/q_value", "safety/v_value", "safety/margin", "inference_ms", "mode")


@dataclass(frozen=True)
class NodeDescription:
    """One node of a setup. `ends_run`: the setup is finished when this node exits (the
    launch file turns that into a Shutdown, the launcher into its normal end). `starts_last`:
    `safefql-launch` starts it only once the other nodes are in the ROS graph, so that what it
    sets going (the bag) is not under way before they listen; `ros2 launch` starts every node
    at once (the player waits for its subscribers there). Readiness beyond being in the graph
    is the lifecycle manager's business (see `boat`)."""

    name: str
    namespace: str = ""  # '' or an absolute namespace such as '/demo'
    parameters: dict[str, Any] = field(default_factory=dict)
    params_files: tuple[str, ...] = ()
    remappings: tuple[tuple[str, str], ...] = ()
    ends_run: bool = False
    starts_last: bool = False
    package: str = PACKAGE

    @property
    def executable(self) -> str:
        return self.name

    @property
    def module(self) -> str:
        return MODULES[self.name]

    @property
    def fqn(self) -> str:
        return f"{self.namespace}/{self.name}"

    def launch_kwargs(self) -> dict[str, Any]:
        """Arguments of `launch_ros.actions.Node` for this node."""
        return {"package": self.package, "executable": self.executable, "name": self.name,
                "namespace": self.namespace or None,
                "parameters": [*self.params_files, dict(self.parameters)],
                "remappings": list(self.remappings), "output": "screen"}


def default_params_file(name: str = PARAMS_FILE) -> Path:
    """config/<name> (boat_nodes.yaml) from the package's share directory when the ament index
    has the package (a colcon install, or the venv after `make setup`), else from this repository."""
    if os.environ.get("AMENT_PREFIX_PATH"):
        try:
            from ament_index_python.packages import get_package_share_directory
            return Path(get_package_share_directory(PACKAGE)) / "config" / name
        except (ImportError, LookupError):
            pass
    return Path(__file__).resolve().parents[1] / "config" / name


def normalize_namespace(namespace: str) -> str:
    namespace = namespace.strip().strip("/")
    return f"/{namespace}" if namespace else ""


def as_bool(value: str | bool) -> bool:
    """A launch argument's text ('true', 'False', '1', ...) as a bool."""
    if isinstance(value, bool):
        return value
    if value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if value.strip().lower() in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def bundle_task_spec(bundle: str | os.PathLike) -> TaskSpec:
    """The bundle's task spec from its bundle.json (as the controller reads it), without
    loading the graphs; a bundle that cannot be read gives the boat spec (the controller then
    refuses to start with the real reason)."""
    try:
        return TaskSpec.of_task(json.loads((Path(bundle) / "bundle.json").read_text())["task"])
    except (OSError, ValueError, KeyError):  # TaskSpecError is a ValueError
        return TaskSpec.builtin("boat")


def _path(value: str | os.PathLike) -> str:
    return os.path.abspath(os.path.expanduser(value)) if str(value) else ""


def parse_remappings(text: str | list[str] | None) -> list[tuple[str, str]]:
    """Remapping rules as `from:=to` (a list, or one comma-separated text as a launch argument
    gives it) -> (from, to) pairs; an empty text is none."""
    rules = [r.strip() for r in (text.split(",") if isinstance(text, str) else text or []) if r.strip()]
    pairs = [tuple(r.split(":=", 1)) for r in rules]
    bad = [r for r, pair in zip(rules, pairs) if len(pair) != 2 or not all(pair)]
    if bad:
        raise ValueError(f"remapping {bad[0]!r} is not of the form from:=to (e.g. boat/cmd_vel:=cmd_vel)")
    return pairs  # type: ignore[return-value]


def _managed(specs: list[tuple[str, dict[str, Any], dict[str, bool]]], autostart: bool,
             managed: tuple[str, ...] = (CONTROLLER,)) -> list[tuple[str, dict[str, Any], dict[str, bool]]]:
    """`specs` plus the lifecycle manager that brings the `managed` nodes up, in that order."""
    return [*specs, (LIFECYCLE_MANAGER, {"node_names": list(managed), "autostart": bool(autostart)}, {})]


def _nodes(specs: list[tuple[str, dict[str, Any], dict[str, bool]]], params_file: str | os.PathLike | None,
           namespace: str, use_sim_time: bool, remappings: list[tuple[str, str]] | None = None,
           ) -> list[NodeDescription]:
    files = (_path(params_file or default_params_file()),)
    ns = normalize_namespace(namespace)
    rules = tuple(tuple(r) for r in remappings or ())
    return [NodeDescription(name, ns, {"use_sim_time": use_sim_time, **params}, files, rules, **flags)
            for name, params, flags in specs]


def _simulation(bundle: str | os.PathLike, init_states: list[float] | None, episode_steps: int | None,
                seed: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parameters of a simulator and its controller that a setup sets (None: left to the
    params file / the node's default); one seed for the simulator's starts and the controller."""
    sim: dict[str, Any] = {}
    if init_states is not None:
        sim["initial_states"] = [float(v) for v in init_states]
    if episode_steps is not None:
        sim["episode_steps"] = int(episode_steps)
    controller: dict[str, Any] = {"bundle": _path(bundle)}
    if seed is not None:
        sim["seed"] = controller["seed"] = int(seed)
    return sim, controller


def boat(bundle: str | os.PathLike, params_file: str | os.PathLike | None = None, use_sim_time: bool = False,
         namespace: str = "", episodes: int | None = None, init_states: list[float] | None = None,
         episode_steps: int | None = None, seed: int | None = None, summary_json: str = "",
         report_dir: str = "", timeout_s: float = 0.0, autostart: bool = True,
         remappings: list[tuple[str, str]] | None = None) -> list[NodeDescription]:
    """Boat simulator + controller (+ episode monitor with `episodes`). None leaves a
    parameter to the params file / the node's default."""
    sim, controller = _simulation(bundle, init_states, episode_steps, seed)
    specs, managed = _watched("boat", sim, controller, namespace, episodes, summary_json, report_dir, timeout_s)
    return _nodes(_managed(specs, autostart, managed), params_file, namespace, use_sim_time, remappings)


def _watched(task: str, sim: dict[str, Any], controller: dict[str, Any], namespace: str, episodes: int | None,
             summary_json: str, report_dir: str, timeout_s: float,
             ) -> tuple[list[tuple[str, dict[str, Any], dict[str, bool]]], tuple[str, ...]]:
    """The simulator `<task>_sim`, the episode monitor of `task` (with `episodes`) and the
    controller, and the nodes the lifecycle manager brings up, in order."""
    specs = [(f"{task}_sim", sim, {})]
    managed: tuple[str, ...] = (CONTROLLER,)
    if episodes is not None:
        # The first episode waits for the controller's first command (stop, held from its
        # configure on), and the lifecycle manager configures the controller only once the
        # episode monitor is active, which it refuses to be until it hears the simulator: the
        # monitor sees every episode whole, from episode 0. Being in the graph is not enough: a
        # short episode (40 steps are 0.2 s) can be over before a subscription matches late.
        sim["start_paused"] = True
        specs.append(("episode_monitor", {
            "task": task, "episodes": int(episodes), "summary_json": _path(summary_json),
            "report_dir": _path(report_dir), "timeout_s": float(timeout_s),
            "controller": f"{normalize_namespace(namespace)}/{CONTROLLER}"},
            {"ends_run": True}))
        managed = ("episode_monitor", CONTROLLER)
    specs.append((CONTROLLER, controller, {}))
    return specs, managed


def diffdrive(bundle: str | os.PathLike, params_file: str | os.PathLike | None = None, use_sim_time: bool = False,
              namespace: str = DIFFDRIVE_NAMESPACE, episodes: int | None = None,
              init_states: list[float] | None = None, episode_steps: int | None = None, seed: int | None = None,
              summary_json: str = "", report_dir: str = "", timeout_s: float = 0.0, autostart: bool = True,
              remappings: list[tuple[str, str]] | None = None) -> list[NodeDescription]:
    """Diff-drive simulator + controller (+ episode monitor with `episodes`), brought up by the
    lifecycle manager in the robot's namespace. None leaves a parameter to the params file
    (config/diffdrive_nodes.yaml by default) / the node's default."""
    sim, controller = _simulation(bundle, init_states, episode_steps, seed)
    specs, managed = _watched("diffdrive", sim, controller, namespace, episodes, summary_json, report_dir, timeout_s)
    return _nodes(_managed(specs, autostart, managed), params_file or default_params_file(DIFFDRIVE_PARAMS_FILE),
                  namespace, use_sim_time, remappings)


def replay(bundle: str | os.PathLike, bag: str | os.PathLike, output: str | os.PathLike,
           params_file: str | os.PathLike | None = None, use_sim_time: bool = True, namespace: str = "",
           rate: float = 1.0, autostart: bool = True,
           remappings: list[tuple[str, str]] | None = None) -> list[NodeDescription]:
    """Player → controller → recorder; ends when the player has played the whole bag. The
    player starts once the controller subscribes to the state (it does once configured) and
    the recorder to the controller's command (once it has seen it), so neither loses the start
    of the bag."""
    spec = bundle_task_spec(bundle)
    command = spec.command.topic
    # Relative names: the recorder resolves them in the setup's namespace, as the controller does.
    recorded = [command.lstrip("/"), *(f"{CONTROLLER}/{name}" for name in CONTROLLER_OUTPUTS), "/diagnostics"]
    return _nodes(_managed([
        ("safefql_recorder", {"output": _path(output), "topics": recorded}, {}),
        (CONTROLLER, {"bundle": _path(bundle)}, {}),
        # The player is the clock: it plays on the wall clock whatever use_sim_time says.
        ("safefql_player", {"bag": _path(bag), "rate": float(rate), "publish_clock": True,
                            "exclude_topics": [command],
                            "wait_for": [*(spec.topic_streams()[n].topic for n in spec.state_inputs()), command],
                            "use_sim_time": False},
         {"ends_run": True, "starts_last": True}),
    ], autostart), params_file, namespace, use_sim_time, remappings)


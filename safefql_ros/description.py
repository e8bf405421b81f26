"""Which nodes a setup starts, with which parameters: the one description behind both
`launch/*.launch.py` (for `ros2 launch` on a full ROS 2 install) and `safefql-launch` (the
pip-only launcher, safefql_ros/launcher.py), so the two cannot drift apart.

Pure Python on purpose — no rclpy, no launch imports — so a launch file can import it at
`ros2 launch` time and the launcher can build command lines from it without a ROS graph.

Setups:
- `boat`: the boat simulator and the controller, optionally an episode monitor that ends the
  run after N episodes (it needs the simulator started paused, see boat_sim's `start_paused`).
- `replay`: bag player (publishes /clock, leaves the recorded command out) → controller on
  sim time (the bag's stamps are old: against the wall clock every state would be stale) →
  recorder of the controller's outputs. The run ends when the player is done.

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
# Executable (console script, setup.py) == node name -> python module.
MODULES = {
    "boat_sim": "safefql_ros.boat_sim",
    "safefql_controller": "safefql_ros.controller",
    "episode_monitor": "safefql_ros.episode_monitor",
    "safefql_player": "safefql_ros.player",
    "safefql_recorder": "safefql_ros.recorder",
}
CONTROLLER = "safefql_controller"
# Under a node's own name: the latched std_msgs/Bool (true) a `signals_ready` node publishes once
# it is ready for the run (see NodeDescription).
READY_TOPIC = "ready"
CONTROLLER_OUTPUTS = ("safety/q_value", "safety/v_value", "safety/margin", "inference_ms", "mode")


@dataclass(frozen=True)
class NodeDescription:
    """One node of a setup. `ends_run`: the setup is finished when this node exits (the
    launch file turns that into a Shutdown, the launcher into its normal end). `starts_last`:
    `safefql-launch` starts it only once the other nodes are in the ROS graph, so that what it
    sets going (the episodes, the bag) is not under way before they listen; `ros2 launch`
    starts every node at once (the player's `start_delay` in boat_nodes.yaml covers it there).
    `signals_ready`: being in the graph is not enough for this node to count as up — a node is
    in the graph before its subscriptions have matched their publishers, which on a busy machine
    can take a second and more. Such a node publishes `ready_topic` once it is really listening;
    `safefql-launch` holds back the `starts_last` nodes until the topic is in the graph."""

    name: str
    namespace: str = ""  # '' or an absolute namespace such as '/demo'
    parameters: dict[str, Any] = field(default_factory=dict)
    params_files: tuple[str, ...] = ()
    ends_run: bool = False
    starts_last: bool = False
    signals_ready: bool = False
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

    @property
    def ready_topic(self) -> str:
        """The node's `~/ready` topic, fully qualified."""
        return f"{self.fqn}/{READY_TOPIC}"

    def launch_kwargs(self) -> dict[str, Any]:
        """Arguments of `launch_ros.actions.Node` for this node."""
        return {"package": self.package, "executable": self.executable, "name": self.name,
                "namespace": self.namespace or None,
                "parameters": [*self.params_files, dict(self.parameters)], "output": "screen"}


def default_params_file() -> Path:
    """config/boat_nodes.yaml from the package's share directory when the ament index has the
    package (a colcon install, or the venv after `make setup`), else from this repository."""
    if os.environ.get("AMENT_PREFIX_PATH"):
        try:
            from ament_index_python.packages import get_package_share_directory
            return Path(get_package_share_directory(PACKAGE)) / "config" / PARAMS_FILE
        except (ImportError, LookupError):
            pass
    return Path(__file__).resolve().parents[1] / "config" / PARAMS_FILE


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


def _nodes(specs: list[tuple[str, dict[str, Any], dict[str, bool]]], params_file: str | os.PathLike | None,
           namespace: str, use_sim_time: bool) -> list[NodeDescription]:
    files = (_path(params_file or default_params_file()),)
    ns = normalize_namespace(namespace)
    return [NodeDescription(name, ns, {"use_sim_time": use_sim_time, **params}, files, **flags)
            for name, params, flags in specs]


def boat(bundle: str | os.PathLike, params_file: str | os.PathLike | None = None, use_sim_time: bool = False,
         namespace: str = "", episodes: int | None = None, init_states: list[float] | None = None,
         episode_steps: int | None = None, seed: int | None = None, summary_json: str = "",
         report_dir: str = "", timeout_s: float = 0.0) -> list[NodeDescription]:
    """Boat simulator + controller (+ episode monitor with `episodes`). None leaves a
    parameter to the params file / the node's default."""
    sim: dict[str, Any] = {}
    if init_states is not None:
        sim["initial_states"] = [float(v) for v in init_states]
    if episode_steps is not None:
        sim["episode_steps"] = int(episode_steps)
    controller: dict[str, Any] = {"bundle": _path(bundle)}
    if seed is not None:
        sim["seed"] = controller["seed"] = int(seed)
    specs = [("boat_sim", sim, {})]
    if episodes is not None:
        # The first episode waits for the controller's first command, and the controller starts
        # once the monitor hears the simulator (its `~/ready`): the monitor sees every episode
        # whole, from episode 0. Being in the graph is not enough: a short episode (40 steps are
        # 0.2 s) can be over before a subscription matches late on a loaded machine.
        sim["start_paused"] = True
        specs.append(("episode_monitor", {
            "episodes": int(episodes), "summary_json": _path(summary_json), "report_dir": _path(report_dir),
            "timeout_s": float(timeout_s), "controller": f"{normalize_namespace(namespace)}/{CONTROLLER}"},
            {"ends_run": True, "signals_ready": True}))
    specs.append((CONTROLLER, controller, {"starts_last": episodes is not None}))
    return _nodes(specs, params_file, namespace, use_sim_time)


def replay(bundle: str | os.PathLike, bag: str | os.PathLike, output: str | os.PathLike,
           params_file: str | os.PathLike | None = None, use_sim_time: bool = True, namespace: str = "",
           rate: float = 1.0) -> list[NodeDescription]:
    """Player → controller → recorder; ends when the player has played the whole bag."""
    command = bundle_task_spec(bundle).command.topic
    controller = f"{normalize_namespace(namespace)}/{CONTROLLER}"
    recorded = [command, *(f"{controller}/{name}" for name in CONTROLLER_OUTPUTS), "/diagnostics"]
    return _nodes([
        ("safefql_recorder", {"output": _path(output), "topics": recorded}, {}),
        (CONTROLLER, {"bundle": _path(bundle)}, {}),
        # The player is the clock: it plays on the wall clock whatever use_sim_time says.
        ("safefql_player", {"bag": _path(bag), "rate": float(rate), "publish_clock": True,
                            "exclude_topics": [command], "use_sim_time": False},
         {"ends_run": True, "starts_last": True}),
    ], params_file, namespace, use_sim_time)


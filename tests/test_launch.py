"""Bringup: the launch files, `safefql-launch` and the config files (launch/, config/,
safefql_ros/description.py, safefql_ros/launcher.py).

`launch` and `launch_ros` are not on PyPI, so the launch files cannot run here. To check they
start what the launcher starts, `test_launch_files_match_the_launcher` loads each one with
small recording stand-ins for the few launch / launch_ros names it uses, put into
`sys.modules` for that test only (the real `launch` package would otherwise be shadowed by
this repository's `launch/` directory anyway), evaluates its OpaqueFunction with a context
holding the launch arguments, and compares the recorded `Node(...)` arguments with the
launcher's command lines for the same arguments. The launcher itself runs for real, as a
subprocess with nodes on this test's private ROS domain.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import TwistStamped  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402

from offline_train import collect  # noqa: E402
from safefql_core.envs import boat  # noqa: E402
from safefql_ros import description, launcher  # noqa: E402
from safefql_ros.controller import COMMAND_QOS  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.usefixtures("ros")]

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config"
# Values in boat_nodes.yaml that differ from the node's declared default, on purpose (the
# YAML's comments say why).
NOT_DEFAULT = {("safefql_controller", "trigger")}


# ---- launch files vs launcher -------------------------------------------------------------------
class Recorded:
    """A stand-in for a launch / launch_ros class: keeps its constructor arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


class LaunchConfiguration(Recorded):
    def perform(self, context: types.SimpleNamespace) -> str:
        return context.launch_configurations[self.args[0]]


STANDINS = {
    "launch": {"LaunchDescription": type("LaunchDescription", (Recorded,), {})},
    "launch.actions": {name: type(name, (Recorded,), {})
                       for name in ("DeclareLaunchArgument", "OpaqueFunction", "Shutdown")},
    "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration},
    "launch_ros": {},
    "launch_ros.actions": {"Node": type("Node", (Recorded,), {})},
}


def launch_file_nodes(monkeypatch, name: str, **arguments: str) -> list[dict[str, Any]]:
    """The `Node(...)` keyword arguments `launch/<name>` produces for these launch arguments."""
    for module_name, attributes in STANDINS.items():
        module = types.ModuleType(module_name)
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, module_name, module)
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), ROOT / "launch" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entities = module.generate_launch_description().args[0]
    kinds = {type(e).__name__ for e in entities}
    assert kinds == {"DeclareLaunchArgument", "OpaqueFunction"}, kinds
    declared = {e.args[0]: e.kwargs for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    assert all(kw.get("description") for kw in declared.values()), "every launch argument needs a description"
    assert set(arguments) <= set(declared), f"{name} does not declare {set(arguments) - set(declared)}"
    required = {n for n, kw in declared.items() if "default_value" not in kw}
    assert required <= set(arguments), f"{name}: required arguments {required - set(arguments)} not given"
    context = types.SimpleNamespace(launch_configurations={
        **{n: kw["default_value"] for n, kw in declared.items() if "default_value" in kw}, **arguments})
    nodes = [node for e in entities if type(e).__name__ == "OpaqueFunction" for node in e.kwargs["function"](context)]
    assert all(type(n).__name__ == "Node" and not n.args for n in nodes)
    return [n.kwargs for n in nodes]


def console_scripts() -> dict[str, str]:
    """setup.py's console scripts: executable -> module."""
    return dict(re.findall(r"'([\w-]+) = ([\w.]+):main'", (ROOT / "setup.py").read_text()))


def from_launch(kwargs: dict[str, Any]) -> dict[str, Any]:
    assert kwargs["package"] == "safefql_ros" and kwargs["output"] == "screen"
    files = [p for p in kwargs["parameters"] if isinstance(p, str)]
    parameters = {k: v for p in kwargs["parameters"] if isinstance(p, dict) for k, v in p.items()}
    return {"module": console_scripts()[kwargs["executable"]], "name": kwargs["name"],
            "namespace": kwargs["namespace"] or "", "params_files": files, "parameters": parameters,
            "remappings": [tuple(r) for r in kwargs["remappings"]], "ends_run": "on_exit" in kwargs}


def from_command(cmd: list[str], node: description.NodeDescription) -> dict[str, Any]:
    """Parse the launcher's command line back; values through YAML, as the ROS parser reads them."""
    assert cmd[:2] == [sys.executable, "-m"] and cmd[3] == "--ros-args"
    parsed: dict[str, Any] = {"module": cmd[2], "namespace": "", "params_files": [], "parameters": {},
                              "remappings": [], "ends_run": node.ends_run}
    for flag, value in zip(cmd[4::2], cmd[5::2]):
        if flag == "-r":
            key, _, target = value.partition(":=")
            if key in ("__node", "__ns"):
                parsed["name" if key == "__node" else "namespace"] = target
            else:
                parsed["remappings"].append((key, target))
        elif flag == "--params-file":
            parsed["params_files"].append(value)
        else:
            assert flag == "-p", cmd
            key, _, text = value.partition(":=")
            parsed["parameters"][key] = yaml.safe_load(text)
    return parsed


@pytest.mark.parametrize("launch_file, arguments, argv", [
    ("boat.launch.py", {"namespace": "demo", "use_sim_time": "true", "remappings": "boat/cmd_vel:=cmd_vel",
                        "autostart": "false"},
     ["boat", "--namespace", "demo", "--use-sim-time", "--remap", "boat/cmd_vel:=cmd_vel", "--no-autostart"]),
    ("boat.launch.py", {}, ["boat"]),
    ("replay.launch.py", {"bag": "some_bag", "output": "out_bag", "rate": "2.0"},
     ["replay", "--bag", "some_bag", "--output", "out_bag", "--rate", "2.0"]),
])
def test_launch_files_match_the_launcher(monkeypatch, bundle, launch_file, arguments, argv):
    launched = [from_launch(kw) for kw in launch_file_nodes(monkeypatch, launch_file, bundle=str(bundle), **arguments)]
    nodes = launcher.setup_nodes(launcher.parse_args([*argv, "--bundle", str(bundle)]))
    commanded = [from_command(launcher.command_line(n), n) for n in nodes]
    assert launched == commanded
    assert {n["name"] for n in launched} >= {"safefql_controller"}
    controller = next(n for n in launched if n["name"] == "safefql_controller")
    assert controller["parameters"]["bundle"] == str(bundle)
    assert controller["params_files"] == [str(description.default_params_file())]
    assert Path(controller["params_files"][0]).resolve() == (CONFIG / "boat_nodes.yaml").resolve()
    if launch_file == "replay.launch.py":
        player = next(n for n in launched if n["name"] == "safefql_player")
        assert player["ends_run"] and player["parameters"]["exclude_topics"] == ["/boat/cmd_vel"]
        assert player["parameters"]["wait_for"] == ["/boat/odom", "/boat/cmd_vel"]
        assert player["parameters"]["publish_clock"] is True and player["parameters"]["rate"] == 2.0
        assert controller["parameters"]["use_sim_time"] is True
        recorder = next(n for n in launched if n["name"] == "safefql_recorder")
        assert "boat/cmd_vel" in recorder["parameters"]["topics"]  # relative: follows the namespace
        assert "safefql_controller/safety/q_value" in recorder["parameters"]["topics"]
    elif arguments:
        assert all(n["namespace"] == "/demo" and n["parameters"]["use_sim_time"] is True for n in launched)
        assert all(n["remappings"] == [("boat/cmd_vel", "cmd_vel")] for n in launched)
    manager = next(n for n in launched if n["name"] == "safefql_lifecycle_manager")
    assert manager["parameters"]["node_names"] == ["safefql_controller"]
    assert manager["parameters"]["autostart"] is (arguments.get("autostart") != "false")


def test_episode_monitor_follows_the_namespace(bundle):
    nodes = description.boat(bundle, namespace="demo", episodes=3, init_states=[-2.0, 0.0], episode_steps=50)
    by_name = {n.name: n for n in nodes}
    assert by_name["episode_monitor"].ends_run and by_name["episode_monitor"].parameters["episodes"] == 3
    assert by_name["episode_monitor"].parameters["controller"] == "/demo/safefql_controller"
    assert by_name["boat_sim"].parameters["start_paused"] is True
    assert by_name["boat_sim"].parameters["initial_states"] == [-2.0, 0.0]
    # The monitor first (active once it hears the simulator), then the controller.
    assert by_name["safefql_lifecycle_manager"].parameters["node_names"] == ["episode_monitor", "safefql_controller"]


def test_init_states_choices(tmp_path):
    assert launcher.initial_states("sampled") is None and launcher.initial_states(None) is None
    for name in boat.STATE_SETS:
        assert np.array_equal(np.reshape(launcher.initial_states(name), (-1, 2)), boat.initial_states(name))
    good, bad = tmp_path / "good.npy", tmp_path / "bad.npy"
    np.save(good, np.array([[-2.0, 0.0], [-2.5, 1.0]]))
    np.save(bad, np.zeros((3, 3)))
    assert launcher.initial_states(str(good)) == [-2.0, 0.0, -2.5, 1.0]
    with pytest.raises(launcher.LaunchError, match=r"expected a non-empty \(N, 2\) array .* got shape \(3, 3\)"):
        launcher.initial_states(str(bad))
    with pytest.raises(launcher.LaunchError, match="no such file"):
        launcher.initial_states(str(tmp_path / "missing.npy"))


# ---- the launcher for real ----------------------------------------------------------------------
def run_launcher(tmp_path: Path, *args: str, probe: Node | None = None,
                 timeout: float = 90.0) -> tuple[int, str, str, set[str]]:
    """Run `safefql-launch` to its end while spinning `probe`; returns (exit status, stdout,
    stderr, fully qualified node names seen in the graph meanwhile)."""
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    seen: set[str] = set()
    executor = SingleThreadedExecutor()
    if probe is not None:
        executor.add_node(probe)
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "safefql_ros.launcher", *args], cwd=ROOT,
                                stdout=stdout, stderr=stderr)
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                if probe is not None:
                    executor.spin_once(timeout_sec=0.05)
                    seen |= {f"{ns.rstrip('/')}/{n}" for n, ns in probe.get_node_names_and_namespaces()}
                else:
                    time.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
            if probe is not None:
                executor.remove_node(probe)
    return proc.returncode, out.read_text(), err.read_text(), seen


def assert_no_children_left(stderr: str) -> None:
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", stderr)]
    assert pids, "the launcher logged no started nodes"
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            alive.append(pid)
        except ProcessLookupError:
            pass
    assert not alive, f"node processes {alive} outlived the launcher"


def start_launcher(tmp_path: Path, name: str, *args: str) -> tuple[subprocess.Popen, Path]:
    """`safefql-launch` in the background, its stderr to tmp_path/<name>.txt."""
    err = tmp_path / f"{name}.txt"
    with open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "safefql_ros.launcher", *args], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=stderr, text=True)
    return proc, err


def test_two_boats_in_two_namespaces(bundle, tmp_path):
    """Two `safefql-launch boat` setups side by side, in /robot1 and /robot2: each controller
    (brought up by its lifecycle manager) commands its own boat under its namespace, nothing
    goes to the global names, and each launcher ends with its nodes gone."""
    probe = Node("launch_probe")
    commands: dict[str, list[tuple[float, float]]] = {"/robot1": [], "/robot2": [], "": []}
    for ns, got in commands.items():
        probe.create_subscription(TwistStamped, f"{ns}/boat/cmd_vel",
                                  lambda m, got=got: got.append((m.twist.linear.x, m.twist.linear.y)),
                                  COMMAND_QOS)
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    launches = [start_launcher(tmp_path, ns, "boat", "--bundle", str(bundle), "--namespace", ns, "--duration", "4")
                for ns in ("robot1", "robot2")]
    try:
        deadline = time.monotonic() + 120
        while any(p.poll() is None for p, _ in launches) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
    finally:
        for proc, _ in launches:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        executor.remove_node(probe)
        probe.destroy_node()
    for (proc, err), ns in zip(launches, ("/robot1", "/robot2")):
        stderr = err.read_text()
        assert proc.returncode == 0, stderr[-3000:]
        assert proc.stdout.read() == "", "the launcher and its nodes write logs to stderr only"
        assert f"all nodes up: {ns}/boat_sim, {ns}/safefql_controller, {ns}/safefql_lifecycle_manager" in stderr
        assert f"{ns}/safefql_controller: activated" in stderr
        # 4 s at 200 Hz = 800 commands; a loaded machine delivers fewer, but far more than a few.
        assert len(commands[ns]) > 100, f"only {len(commands[ns])} commands on {ns}/boat/cmd_vel"
        assert any(c != (0.0, 0.0) for c in commands[ns]), f"{ns}: only stop commands: the policy never ran"
        assert_no_children_left(stderr)
    assert commands[""] == [], "a namespaced setup published on the global /boat/cmd_vel"


def test_node_that_cannot_start_fails_the_launch(bundle, tmp_path):
    # A bad bundle is refused before any node starts (tests/test_errors_before_work.py); a
    # parameter the controller refuses still ends the launch with the node's own reason.
    params = tmp_path / "params.yaml"
    params.write_text("/**/safefql_controller:\n  ros__parameters:\n    trigger: sometimes\n")
    status, _, stderr, _ = run_launcher(tmp_path, "boat", "--bundle", bundle, "--params-file", str(params),
                                        "--duration", "30")
    assert status != 0
    assert "error: /safefql_controller exited unexpectedly with status 1" in stderr
    assert "must be 'timer' or 'state', got 'sometimes'" in stderr  # the node's own reason, passed through
    assert_no_children_left(stderr)


def run_two_episodes(tmp_path: Path, setup: str, bundle: str, steps: int) -> tuple[dict, dict[int, list[float]]]:
    """`safefql-launch SETUP --episodes 2` from the first two evaluation starts, asserting what the
    launcher guarantees for any robot: the monitor's JSON summary is the last stdout line and its
    status the launcher's, every file written is announced (issue 33), episodes 0 and 1 are
    counted whole, no child is left. Returns the summary and the starts the simulator logged."""
    report = tmp_path / "report"
    status, stdout, stderr, _ = run_launcher(tmp_path, setup, "--bundle", str(bundle), "--episodes", "2",
                                             "--episode-steps", str(steps), "--init-states", "evaluation",
                                             "--report-dir", str(report), "--timeout", "60",
                                             "--summary-json", str(tmp_path / "summary.json"))
    assert status == 0, stderr[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["episodes"] == 2 and summary["complete"] is True
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert f"summary written to {tmp_path / 'summary.json'}" in stderr
    assert f"report written to {report}/closed_loop.png and episodes.json" in stderr
    episodes = json.loads((report / "episodes.json").read_text())["episodes"]
    assert [e["episode"] for e in episodes] == [0, 1], episodes
    assert_no_children_left(stderr)
    return summary, {int(i): json.loads(start) for i, start in
                     re.findall(rf"\[{setup}_sim\].*episode (\d+) starts at (\[[^\]]*\])", stderr)}


def test_launcher_counts_episodes(bundle, tmp_path):
    """`--episodes`: see run_two_episodes.

    What the launcher guarantees is asserted, not what timing usually gives: the monitor counts
    episodes 0 and 1 whole (the controller starts only once the monitor hears the simulator),
    and the simulator started them at the first two evaluation states, in order (its own log).
    Which episode the odometry samples around a reset belong to is not asserted: the episode
    index and the odometry are two topics, with no order between them."""
    _, starts = run_two_episodes(tmp_path, "boat", bundle, 40)
    assert np.allclose([starts[0], starts[1]], boat.evaluation_states()[:2], atol=1e-3), starts


def test_launcher_replays_a_bag_through_the_controller(bundle, tmp_path):
    """`safefql-launch replay`: the bag's states (its own commands left out) drive the controller
    on the bag's /clock, and the recorder writes what the controller answered."""
    bag, output = tmp_path / "bag", tmp_path / "replayed"
    assert collect.main(["--task", "boat", "--format", "bag", "--episodes", "1", "--seed", "0",
                         "--out", str(bag), "--no-progress"]) == 0
    status, stdout, stderr, _ = run_launcher(tmp_path, "replay", "--bag", str(bag), "--bundle", str(bundle),
                                             "--output", str(output), "--rate", "1.0", timeout=120.0)
    assert status == 0, stderr[-3000:]
    with AnyReader([output]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    with AnyReader([bag]) as reader:
        states = sum(c.msgcount for c in reader.connections if c.topic == "/boat/odom")
    # The player starts once the controller and the recorder listen, so commands are recorded
    # from the start of the bag, not only after a lucky start delay. Played at the recorded rate
    # (at twice it, a loaded 2-core machine answered only 31-50 % of the states); half of them
    # still leaves room for ticks a loaded machine coalesces.
    assert counts.get("/boat/cmd_vel", 0) >= 0.5 * states, (counts, states)
    assert counts.get("/safefql_controller/safety/q_value", 0) >= 50, counts
    assert counts.get("/diagnostics", 0) >= 1, counts
    with AnyReader([output]) as reader:
        modes = {reader.deserialize(raw, c.msgtype).data
                 for c, _, raw in reader.messages([c for c in reader.connections if c.topic.endswith("/mode")])}
    assert modes - {"REJECTED", "INACTIVE"}, \
        f"the controller never trusted a replayed state (bag stamps vs /clock): {modes}"
    assert_no_children_left(stderr)


# ---- config files -------------------------------------------------------------------------------
def test_the_node_yamls_leave_the_decision_to_the_bundle():
    """The decision's settings come from the bundle (what `evaluate`, `replay` and `calibrate`
    run); the node YAMLs set none of them, nor the override."""
    for name in ("boat_nodes.yaml", "diffdrive_nodes.yaml"):
        params = yaml.safe_load((CONFIG / name).read_text())["/**/safefql_controller"]["ros__parameters"]
        assert "stop_action" not in params and "fallback_actions" not in params, name
        assert (params["candidates"], params["proposals"], params["noise"], params["override_decision"]) == \
            (-1, 0, "", False), name


def test_perspective_names_the_plots_and_the_monitor():
    doc = json.loads((CONFIG / "safefql.perspective").read_text())
    manager = doc["groups"]["pluginmanager"]
    running = eval(manager["keys"]["running-plugins"]["repr"], {})  # rqt stores Python reprs
    assert set(running) == {"rqt_plot/Plot", "rqt_runtime_monitor/RuntimeMonitor"}
    plot = manager["groups"]["plugin__rqt_plot__Plot__1"]["groups"]["plugin"]["keys"]
    topics = eval(plot["topics"]["repr"], {})
    assert topics == ["/safefql_controller/safety/q_value/data", "/safefql_controller/safety/margin/data",
                      "/safefql_controller/safety/v_value/data", "/boat/margin/data"]
    assert "plugin__rqt_runtime_monitor__RuntimeMonitor__1" in manager["groups"]


def test_aggregator_yaml_covers_the_controller_status():
    params = yaml.safe_load((CONFIG / "diagnostic_aggregator.yaml").read_text())["analyzers"]["ros__parameters"]
    analyzer = params["safefql"]
    assert analyzer["type"] == "diagnostic_aggregator/GenericAnalyzer" and analyzer["path"] == "SafeFQL"
    status_name = "safefql_controller: policy"  # Controller.diagnostic_status
    assert any(status_name.startswith(prefix) for prefix in analyzer["startswith"])
    assert analyzer["expected"] == [status_name]


def node_classes() -> dict[str, type]:
    """The rclpy Node class of each node in the description's table, where its module exists."""
    classes = {}
    for name, module_name in description.MODULES.items():
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        found = [c for c in vars(module).values()
                 if inspect.isclass(c) and issubclass(c, Node) and c.__module__ == module_name]
        assert len(found) == 1, f"{module_name}: expected one Node class, found {found}"
        classes[name] = found[0]
    return classes


def test_node_params_yaml_names_declared_parameters(bundle):
    """Every value in boat_nodes.yaml is a parameter the node declares, with the declared type
    (a YAML `0` for a double parameter would fail here), and equals the declared default
    unless listed in NOT_DEFAULT. The player and recorder take a bag to construct: their
    names are checked against the `declare_parameter` calls in their source."""
    doc = yaml.safe_load((CONFIG / "boat_nodes.yaml").read_text())
    classes = node_classes()
    required = {"safefql_controller": {"bundle": str(bundle)},
                "safefql_lifecycle_manager": {"node_names": ["safefql_controller"]}}
    for key, section in doc.items():
        name = key.removeprefix("/**/")
        assert name in description.MODULES and set(section) == {"ros__parameters"}, key
        values = section["ros__parameters"]
        if name not in classes:
            continue
        if name in ("safefql_player", "safefql_recorder"):
            source = inspect.getsource(importlib.import_module(description.MODULES[name]))
            declared = set(re.findall(r"declare_parameter\(\s*[\"'](\w+)[\"']", source))
            assert set(values) <= declared, f"{name}: {set(values) - declared} are not declared"
            continue
        extra = required.get(name, {})
        configured = classes[name](parameter_overrides=[Parameter(k, value=v) for k, v in {**values, **extra}.items()])
        default = classes[name](parameter_overrides=[Parameter(k, value=v) for k, v in extra.items()])
        try:
            for param, value in values.items():
                assert configured.has_parameter(param), f"{name} does not declare {param}"
                got = configured.get_parameter(param).value
                assert (list(got) if isinstance(value, list) else got) == value, (name, param)
                if (name, param) not in NOT_DEFAULT:
                    expected = default.get_parameter(param).value
                    assert (list(expected) if isinstance(value, list) else expected) == value, \
                        f"{name}.{param}: YAML {value!r} but the node's default is {expected!r}"
        finally:
            configured.destroy_node()
            default.destroy_node()


def test_nodes_die_with_a_killed_launcher(bundle, tmp_path):
    """SIGKILL of `safefql-launch` (no teardown runs) still ends every node: each asked the
    kernel for SIGTERM on its parent's death, and the controller sends its final stop."""
    proc, err = start_launcher(tmp_path, "killed", "boat", "--bundle", str(bundle))
    try:
        deadline = time.monotonic() + 60
        while "all nodes up" not in err.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "all nodes up" in err.read_text(), err.read_text()[-3000:]
    finally:
        proc.kill()
        proc.wait(timeout=30)
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", err.read_text())]
    assert len(pids) == 3, err.read_text()[-3000:]
    deadline = time.monotonic() + 20
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in pids if _running(pid)]
    for pid in alive:  # never leave them running on the test's domain
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"node processes {alive} outlived the SIGKILLed launcher"


def _running(pid: int) -> bool:
    """Whether `pid` runs (a zombie of an init-reaped child does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def test_domain_allocator_never_hands_out_a_held_id():
    """Concurrent test runs get different ROS domains: an id stays taken while its lock is held."""
    from conftest import allocate_domain
    first, lock = allocate_domain()
    try:
        second, other = allocate_domain()
        other.close()
        assert second != first
    finally:
        lock.close()
    again, lock = allocate_domain()
    lock.close()
    assert again == first, "a released id is free again"

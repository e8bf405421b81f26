"""`safefql-launch`: start a setup's nodes where `ros2 launch` is not installed (pip-only).

    safefql-launch boat --bundle bundle/ --episodes 10 --init-states test
    safefql-launch diffdrive --bundle runs/diffdrive/bundle
    safefql-launch replay --bag run1_bag/ --bundle bundle/ --output run1_replayed/

The nodes, names and parameters come from `safefql_ros.description`, the description the
launch files (launch/*.launch.py) use, so both start the same thing. Each node runs as
`<this python> -m <module> --ros-args ...` in its own process group (a terminal Ctrl-C
reaches only the launcher, which then stops the nodes in order), with its output prefixed
by its name on stderr. The launcher waits until every node is visible in the ROS graph (the
lifecycle manager, one of the nodes, then brings the managed ones up in order: the episode
monitor once it hears the simulator, then the controller), then runs until the episode
monitor exits (`--episodes`), the
player has played the bag (replay), `--duration` elapses, a node dies (an error naming it
and its exit status), or Ctrl-C / SIGTERM. Teardown: SIGINT to every node (the controller
sends its final stop, the recorder closes its bag), then SIGTERM, then SIGKILL, each with a
bounded wait.

The launcher writes its own messages to stderr only: with `--episodes` the monitor's stdout
passes through unchanged, so its JSON summary is the last line of stdout, and the exit
status is the monitor's (0: all episodes done, 2: incomplete).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any

from safefql_core.envs import boat, diffdrive
from safefql_core.tasks import TaskSpecError
from safefql_ros import description
from safefql_ros.description import LAUNCHER_PID_ENV, NodeDescription

DISCOVERY_TIMEOUT_S = 30.0  # loading and verifying a bundle takes seconds on a busy machine
POLL_S = 0.1
# (signal, wait s) in teardown order; SIGINT's wait covers the controller's final stop (<= 1 s)
# and the recorder closing its bag.
TEARDOWN = ((signal.SIGINT, 5.0), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0))
INTERRUPTED = 130
_write_lock = threading.Lock()


class LaunchError(RuntimeError):
    """A problem with the launcher's arguments or inputs; the message says what to fix."""


def log(message: str) -> None:
    with _write_lock:
        print(f"[safefql-launch] {message}", file=sys.stderr, flush=True)


def command_line(node: NodeDescription, python: str = sys.executable) -> list[str]:
    """The node's process: parameters after the params file so they win; values as JSON,
    which the ROS parameter parser reads as YAML with the same types."""
    cmd = [python, "-m", node.module, "--ros-args", "-r", f"__node:={node.name}"]
    if node.namespace:
        cmd += ["-r", f"__ns:={node.namespace}"]
    for source, target in node.remappings:
        cmd += ["-r", f"{source}:={target}"]
    for params_file in node.params_files:
        cmd += ["--params-file", params_file]
    for key, value in node.parameters.items():
        cmd += ["-p", f"{key}:={json.dumps(value)}"]
    return cmd


def initial_states(choice: str | None) -> list[float] | None:
    """`--init-states`: None or "sampled" (boat_sim samples), a named set of
    safefql_core.envs.boat.STATE_SETS (in order), or an (N, 2) .npy file, as the flat x, y
    list boat_sim's `initial_states` takes."""
    if choice in (None, "sampled"):
        return None
    try:
        states = boat.load_initial_states(choice)
    except ValueError as exc:
        raise LaunchError(f"{exc} (or 'sampled')") from None
    return states.ravel().tolist()


def _pump(stream: IO[str], out: IO[str], prefix: str) -> None:
    for line in stream:
        with _write_lock:
            out.write(prefix + line)
            out.flush()


class Child:
    """One node process and the threads that forward its output."""

    def __init__(self, node: NodeDescription, env: dict[str, str]) -> None:
        self.node = node
        self.proc = subprocess.Popen(command_line(node), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, errors="replace", process_group=0)
        prefix = f"[{node.name}] "
        # The episode monitor's stdout is the result (one JSON line): it passes through as is.
        stdout, stdout_prefix = (sys.stdout, "") if node.name == "episode_monitor" else (sys.stderr, prefix)
        self.threads = [threading.Thread(target=_pump, args=(self.proc.stdout, stdout, stdout_prefix), daemon=True),
                        threading.Thread(target=_pump, args=(self.proc.stderr, sys.stderr, prefix), daemon=True)]
        for thread in self.threads:
            thread.start()
        log(f"started {node.fqn} (pid {self.proc.pid}): python -m {node.module}")

    @property
    def status(self) -> int | None:
        """Exit status as a shell reports it (128 + N for death by signal N); None while running."""
        code = self.proc.poll()
        return None if code is None else (128 - code if code < 0 else code)

    def signal(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass


class Graph:
    """A short-lived rclpy node that reads the ROS graph (no spinning needed)."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.signals import SignalHandlerOptions
        self.rclpy, self.context = rclpy, rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(f"safefql_launch_{os.getpid()}", context=self.context,
                                      start_parameter_services=False, enable_rosout=False)

    def missing(self, nodes: list[NodeDescription]) -> list[str]:
        """The nodes not in the graph yet (readiness beyond that: the lifecycle manager's)."""
        seen = {f"{ns.rstrip('/')}/{name}" for name, ns in self.node.get_node_names_and_namespaces()}
        return [node.fqn for node in nodes if node.fqn not in seen]

    def close(self) -> None:
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)


def supervise(nodes: list[NodeDescription], children: list[Child], env: dict[str, str], duration: float | None,
              stop: threading.Event) -> int | None:
    """Start the nodes (`starts_last` ones once the others are in the graph), wait until all
    are, then for the end of the run. Appends to
    `children` as it starts them. Returns an exit status for a failure or an interrupt, None for a normal end."""
    pending = [n for n in nodes if n.starts_last]
    children += [Child(n, env) for n in nodes if not n.starts_last]
    graph: Graph | None = Graph()
    deadline, up_since = time.monotonic() + DISCOVERY_TIMEOUT_S, 0.0
    try:
        while True:
            if stop.is_set():
                log("interrupted: stopping the nodes")
                return INTERRUPTED
            for child in children:
                if child.status is None:
                    continue
                if child.node.ends_run:
                    log(f"{child.node.fqn} finished (exit status {child.status}): stopping the other nodes")
                    return None
                log(f"error: {child.node.fqn} exited unexpectedly with status {child.status} "
                    "(its last messages are above)")
                return 1
            if graph is not None:
                missing = graph.missing([c.node for c in children if c.status is None])
                if missing and time.monotonic() > deadline:
                    log(f"error: not up after {DISCOVERY_TIMEOUT_S:g} s: {', '.join(missing)} "
                        "(check their messages above, ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE)")
                    return 1
                if not missing and pending:
                    children += [Child(n, env) for n in pending]
                    pending, deadline = [], time.monotonic() + DISCOVERY_TIMEOUT_S
                elif not missing:
                    graph.close()
                    graph, up_since = None, time.monotonic()
                    log(f"all nodes up: {', '.join(c.node.fqn for c in children)}")
            elif duration is not None and time.monotonic() - up_since >= duration:
                log(f"--duration {duration:g} s elapsed: stopping the nodes")
                return None
            stop.wait(POLL_S)
    finally:
        if graph is not None:
            graph.close()


def teardown(children: list[Child]) -> None:
    """SIGINT, then SIGTERM, then SIGKILL to whatever still runs, each with a bounded wait.
    A node that does not stop cleanly is reported, as `ros2 launch` does, without changing
    the exit status: the run's result was decided before the teardown."""
    running = [c for c in children if c.status is None]
    stopping, forced = list(running), set()
    for sig, wait in TEARDOWN:
        if not running:
            break
        if sig != signal.SIGINT:
            log(f"{', '.join(c.node.fqn for c in running)} still running: sending {sig.name}")
            forced |= {id(c) for c in running}
        for child in running:
            child.signal(sig)
        deadline = time.monotonic() + wait
        while running and time.monotonic() < deadline:
            time.sleep(0.05)
            running = [c for c in running if c.status is None]
    for child in children:
        child.proc.wait()
        for thread in child.threads:
            thread.join(timeout=2.0)
    for child in stopping:
        if id(child) in forced or (child.status and not child.node.ends_run):
            log(f"warning: {child.node.fqn} did not stop cleanly (exit status {child.status})")


def run(nodes: list[NodeDescription], duration: float | None) -> int:
    """Start, supervise and tear down; the exit status (see the module docstring)."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # for the nodes and the graph query
    # The nodes die with the launcher, even a SIGKILLed one (node_tools.die_with_launcher).
    env = {**os.environ, "PYTHONUNBUFFERED": "1", LAUNCHER_PID_ENV: str(os.getpid())}
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    children: list[Child] = []
    status: int | None = 1
    try:
        status = supervise(nodes, children, env, duration, stop)
    finally:
        teardown(children)
    if status is None:
        finisher = next((c for c in children if c.node.ends_run), None)
        status = finisher.status if finisher else 0
    log(f"exit status {status}")
    return status


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bundle", required=True, help="policy bundle directory (python -m offline_train.export)")
    common.add_argument("--params-file", help="node parameters YAML (default: config/boat_nodes.yaml)")
    common.add_argument("--namespace", default="", help="namespace for the nodes and their topics (only "
                        "/diagnostics and /clock stay global): isolates one robot's setup")
    common.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                        help="remap a topic for every node, e.g. boat/cmd_vel:=/robot/cmd_vel (repeatable)")
    common.add_argument("--no-autostart", dest="autostart", action="store_false",
                        help="leave the controller unconfigured (bring it up with ros2 lifecycle set)")
    common.add_argument("--duration", type=_positive(float), help="stop after this many seconds once all nodes are "
                        "up (exit status 0; with --episodes the monitor's: 2 if not all episodes were done)")
    epilog = ("The nodes get ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST unless it is already set in the environment "
              "(export another value to reach other machines); ROS_DOMAIN_ID is passed on as set.")
    parser = argparse.ArgumentParser(prog="safefql-launch", epilog=epilog,
                                     description="Start the SafeFQL nodes of a setup without `ros2 launch`.")
    setups = parser.add_subparsers(dest="setup", required=True)
    # What both simulated robots take: the clock, a run of N watched episodes and its outputs.
    simulated = argparse.ArgumentParser(add_help=False)
    simulated.add_argument("--use-sim-time", action="store_true",
                           help="all nodes on /clock (something must publish it)")
    simulated.add_argument("--episodes", type=_positive(int),
                           help="run this many episodes, print their JSON summary, exit")
    simulated.add_argument("--episode-steps", type=_positive(int), help="steps per episode (default: params file)")
    simulated.add_argument("--summary-json", default="", help="with --episodes: also write the summary to this file")
    simulated.add_argument("--report-dir", default="",
                           help="with --episodes: write a trajectory map and episodes.json here")
    simulated.add_argument("--timeout", type=_positive(float), help="with --episodes: give up after this many "
                           "seconds (partial summary, exit status 2)")
    b = setups.add_parser("boat", parents=[common, simulated], epilog=epilog,
                          help="boat simulator + controller (+ episode monitor)")
    b.add_argument("--init-states", help="episode initial states: a named set, in order (test, validation, or "
                   "evaluation, the old set), sampled (default: boat_sim samples safe states) or PATH.npy with an "
                   "(N, 2) array")
    b.add_argument("--seed", type=int, help="seed of boat_sim's sampled states and the controller's sampler")
    d = setups.add_parser("diffdrive", parents=[common, simulated], epilog=epilog,
                          help="IR-SIM diff-drive robot + controller (+ episode monitor), in the robot's namespace "
                               f"(default {description.DIFFDRIVE_NAMESPACE})")
    d.add_argument("--init-states", choices=["sampled", *diffdrive.START_SETS], default="sampled",
                   help="episode start poses: sampled safe starts (default) or a fixed set, in order")
    d.add_argument("--seed", type=int, help="seed of the sampled starts and the controller's sampler")
    r = setups.add_parser("replay", parents=[common], epilog=epilog,
                          help="bag player -> controller (sim time) -> recorder; ends when the bag is played")
    r.add_argument("--bag", required=True, help="rosbag2 directory to play")
    r.add_argument("--output", required=True, help="bag directory to record the controller's outputs into")
    r.add_argument("--rate", type=_positive(float), default=1.0, help="playback rate (default 1.0)")
    args = parser.parse_args(argv)
    if args.setup != "replay" and args.episodes is None:
        given = [flag for flag, value in (("--summary-json", args.summary_json), ("--report-dir", args.report_dir),
                                          ("--timeout", args.timeout)) if value]
        if given:
            parser.error(f"{', '.join(given)}: apply only with --episodes")
    return args


def setup_nodes(args: argparse.Namespace) -> list[NodeDescription]:
    """The description's nodes for parsed arguments."""
    common = {"bundle": args.bundle, "params_file": args.params_file, "namespace": args.namespace,
              "autostart": args.autostart, "remappings": description.parse_remappings(args.remap)}
    if args.setup == "replay":
        return description.replay(bag=args.bag, output=args.output, rate=args.rate, **common)
    simulated = {"use_sim_time": args.use_sim_time, "episodes": args.episodes, "episode_steps": args.episode_steps,
                 "seed": args.seed, "summary_json": args.summary_json, "report_dir": args.report_dir,
                 "timeout_s": args.timeout or 0.0}
    if args.setup == "diffdrive":
        starts = (None if args.init_states == "sampled"
                  else diffdrive.START_SETS[args.init_states]().reshape(-1).tolist())
        return description.diffdrive(init_states=starts, **simulated,
                                     **{**common, "namespace": args.namespace or description.DIFFDRIVE_NAMESPACE})
    return description.boat(init_states=initial_states(args.init_states), **simulated, **common)


def check_inputs(args: argparse.Namespace) -> None:
    """Pre-flight: refuse, before any node starts, what would make one fail after the others
    are up: a bundle the controller cannot load, a bag the player cannot read, an output bag
    the recorder would not overwrite."""
    from safefql_core.bags import BagError, existing_bag, new_bag
    from safefql_core.bundle import BundleError, load_bundle
    try:
        load_bundle(args.bundle)
        if args.setup == "replay":
            existing_bag(args.bag)
            new_bag(args.output)
    except (BundleError, BagError) as exc:
        raise LaunchError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_inputs(args)
        nodes = setup_nodes(args)
    except (LaunchError, TaskSpecError, ValueError) as exc:
        log(f"error: {exc}")
        return 2
    return run(nodes, args.duration)


if __name__ == "__main__":
    sys.exit(main())

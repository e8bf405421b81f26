"""`episode_monitor`: counts closed-loop episodes of a simulated robot through DDS and prints
their summary.

It watches only what any outside observer could: the simulator's episode index (latched:
`boat/episode`, or the diff-drive robot's `episode` in its namespace), the robot's odometry,
the controller's per-state latency
(`<controller>/latency_ms`) and its `/diagnostics` status (interventions, CPU use). After
`episodes` complete episodes it writes the summary (and, with `report_dir`, a map of the
trajectories), prints the summary as one JSON line — the last line of its stdout — and
exits; `safefql-launch boat|diffdrive --episodes N` ends when it does. The `task` parameter
names the robot (see ROBOTS).

An episode is complete when the simulator announces the next one; the indices (0, 1, 2, ...)
tell the monitor which episode it is in, so one it did not see from start to end is logged
and left out, never counted in part. Violations are counted per step from the odometry with
the robot's true margin function (the boat's l(s) of the simulator and training; the
diff-drive robot's radius minus its clearance, > 0 in contact); the goal counts as reached
within the robot's goal radius (`boat.GOAL_RADIUS`, see there why it is not smaller;
`diffdrive.GOAL_RADIUS`).

A managed (lifecycle) node whose `activate` succeeds only once it hears the simulator (see
`hears_the_simulator`). Start the simulator with `start_paused` and bring the controller up
only after this monitor is active, so that episode 0 does not begin before the monitor
listens; `safefql-launch <robot> --episodes N` and the launch files' lifecycle manager do both (it
retries a refused activation). A node is in the ROS graph before its subscriptions have
matched, and a late match would skip the first episodes.

Run: `python -m safefql_ros.episode_monitor --ros-args -p episodes:=10 [-p task:=diffdrive]`.
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from std_msgs.msg import Float64, UInt32

from safefql_core.envs import boat, diffdrive
from safefql_core.envs import diffdrive_messages as messages
from safefql_core.envs.diffdrive_evaluation import draw_map as draw_diffdrive_map
from safefql_core.evaluation import draw_boat_map, plot_trajectories
from safefql_core.tasks import TaskSpec
from safefql_ros.node_tools import ManagedNode, float_range, int_range, relative, shutdown, spin, start_node
from safefql_ros.qos import LATCHED_EVERY_QOS

FINAL_DIAGNOSTICS_WAIT_S = 2.0  # after the last episode, wait this long for a fresher status


@dataclass(frozen=True)
class Robot:
    """What the monitor knows of a simulated robot: its simulator's episode and odometry topics
    (relative, so they resolve in the monitor's namespace as the simulator's do), its true
    safety margin and goal distance of (..., 2) positions, its goal radius and its map."""

    episode_topic: str
    odom_topic: str
    margin: Callable[[np.ndarray], np.ndarray]
    goal_distance: Callable[[np.ndarray], np.ndarray]
    goal_radius: float
    draw_map: Callable[[Any], None]


ROBOTS = {
    "boat": Robot("boat/episode", TaskSpec.builtin("boat").state.topic, boat.margin, boat.goal_distance,
                  boat.GOAL_RADIUS, draw_boat_map),
    "diffdrive": Robot("episode", messages.ODOM, diffdrive.margin, diffdrive.goal_distance, diffdrive.GOAL_RADIUS,
                       draw_diffdrive_map),
}


class EpisodeMonitor(ManagedNode):
    """See the module docstring; `done` is set once the summary is ready."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("episode_monitor", **kwargs)

    def setup(self) -> None:
        ro = {"read_only": True}
        self.target = self.declare_parameter("episodes", 10, ParameterDescriptor(
            description="Complete episodes to watch before summarising and exiting",
            integer_range=int_range(1, 10**6), **ro)).value
        self.summary_json = self.declare_parameter("summary_json", "", ParameterDescriptor(
            description="Also write the summary to this JSON file ('' = only print it)", **ro)).value
        self.report_dir = self.declare_parameter("report_dir", "", ParameterDescriptor(
            description="Directory for the trajectory map and per-episode JSON ('' = none)", **ro)).value
        self.timeout_s = self.declare_parameter("timeout_s", 0.0, ParameterDescriptor(
            description="Give up (exit status 2, partial summary) after this many seconds; 0 = never",
            floating_point_range=float_range(0.0, 1e6), **ro)).value
        controller = self.declare_parameter("controller", "/safefql_controller", ParameterDescriptor(
            description="Fully qualified name of the controller node whose outputs are read", **ro)).value
        task = self.declare_parameter("task", "boat", ParameterDescriptor(
            description=f"The simulated robot whose episodes are watched: {' or '.join(ROBOTS)}", **ro)).value
        if task not in ROBOTS:
            raise ValueError(f"task {task!r}: the episode monitor watches {' or '.join(ROBOTS)}")
        self.robot = ROBOTS[task]
        # Loads the robot's world now: the diff-drive robot's is IR-SIM's (seconds to load), and
        # in the first episode's callback the monitor would miss the next episode's index.
        self.robot.margin(np.zeros((1, 2)))
        self.current: int | None = None          # episode index now running
        self.whole = False                        # whether the monitor saw `current` start
        self.odometry_heard = False
        self.path: list[np.ndarray] = []         # its odometry positions
        self.episodes: list[dict[str, Any]] = []
        self.trajectories: list[np.ndarray] = []
        self.latencies: list[float] = []
        self.controller_status: dict[str, str] = {}
        self.interventions_at_start: int | None = None
        self.status_name = f"{controller.rsplit('/', 1)[-1]}: policy"
        self.finished_at: float | None = None
        self.diagnostics_after_finish = False
        self.started = time.monotonic()
        self.done = False
        self.timed_out = False

        # Created before the odometry subscription on purpose: see hears_the_simulator.
        self.episode_sub = self.create_subscription(UInt32, self.robot.episode_topic, self._on_episode,
                                                    LATCHED_EVERY_QOS)
        self.create_subscription(Odometry, relative(self.robot.odom_topic, self.get_namespace()), self._on_odom,
                                 qos_profile_sensor_data)
        self.create_subscription(Float64, f"{controller}/latency_ms", self._on_latency, 100)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.create_timer(0.1, self._check_done)
        self.get_logger().info(f"watching {self.target} {task} episodes")

    # ---- inputs --------------------------------------------------------------------------------
    def _on_episode(self, msg: UInt32) -> None:
        """The simulator's next episode index. Indices count up by one from 0, so an episode is
        counted only when the monitor saw it announced and then the next one follow it: a
        first index above 0 means the monitor joined late (the episode under way is left out),
        a gap that an announcement was lost (the path spans two episodes: left out). Both warn."""
        index = msg.data
        if index == self.current:
            return  # the latched value once more
        expected = 0 if self.current is None else self.current + 1
        if index == expected and self.whole and self.path and not self.finished:
            self._close_episode()
        if index != expected:
            self.get_logger().warning(f"episode {index} announced, expected {expected}: " + (
                f"joined late, counting from episode {index + 1}" if self.current is None
                else f"episode {self.current} is not counted"))
        self.whole = self.current is not None or index == 0  # seen from its start
        if self.whole and self.interventions_at_start is None:
            self.interventions_at_start = self._interventions()
        self.current, self.path = index, []

    def _on_odom(self, msg: Odometry) -> None:
        self.odometry_heard = True
        if self.recording:
            self.path.append(np.array([msg.pose.pose.position.x, msg.pose.pose.position.y]))

    def _on_latency(self, msg: Float64) -> None:
        if self.recording:
            self.latencies.append(msg.data)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == self.status_name:
                self.controller_status = {kv.key: kv.value for kv in status.values}
                self.diagnostics_after_finish = self.finished

    # ---- bookkeeping ---------------------------------------------------------------------------
    def hears_the_simulator(self) -> bool:
        """Odometry has arrived, so the simulator has matched this node's subscriptions — the
        episode one too, as discovery announces a node's endpoints in the order they are
        created and that one is created first — and the episode subscription has matched the
        simulator's publisher. Until then episode 0 must not start: a match after it began
        would deliver a later latched index, and the episodes before it would be lost."""
        return self.odometry_heard and self.episode_sub.get_publisher_count() > 0

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Active = ready for episode 0: refused (the manager retries) until it hears the simulator."""
        if not self.hears_the_simulator():
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info("hearing the simulator: ready for episode 0")
        return TransitionCallbackReturn.SUCCESS

    @property
    def recording(self) -> bool:
        """Whether odometry and latency samples now belong to an episode that will be counted."""
        return self.whole and not self.finished

    @property
    def finished(self) -> bool:
        return len(self.episodes) >= self.target

    def _interventions(self) -> int:
        return int(self.controller_status.get("interventions", 0))

    def _close_episode(self) -> None:
        path = np.stack(self.path)
        violating = int((self.robot.margin(path) > 0).sum())
        closest = float(self.robot.goal_distance(path).min())
        reached = closest <= self.robot.goal_radius
        self.episodes.append({"episode": self.current, "steps": len(path), "start": path[0].round(4).tolist(),
                              "violating_steps": violating, "goal_reached": reached,
                              "min_goal_distance": round(closest, 4)})
        self.trajectories.append(path)
        self.get_logger().info(f"episode {self.current}: {len(path)} steps, {violating} violating, "
                               f"goal {'reached' if reached else 'NOT reached'} "
                               f"({len(self.episodes)}/{self.target})")
        if self.finished:
            self.finished_at = time.monotonic()

    def _check_done(self) -> None:
        if self.done:
            return
        if self.finished_at is not None:
            waited = time.monotonic() - self.finished_at
            self.done = self.diagnostics_after_finish or waited > FINAL_DIAGNOSTICS_WAIT_S
        elif self.timeout_s and time.monotonic() - self.started > self.timeout_s:
            self.get_logger().error(f"timed out after {self.timeout_s:g} s with {len(self.episodes)}/"
                                    f"{self.target} episodes (is the simulator running and resetting?)")
            self.done = self.timed_out = True

    def summary(self) -> dict[str, Any]:
        """The one-line result: the keys `make demo` promises, then context."""
        lat = np.asarray(self.latencies, dtype=np.float64)
        pct = (lambda q: round(float(np.percentile(lat, q)), 4)) if lat.size else (lambda q: None)
        status = self.controller_status
        return {
            "episodes": len(self.episodes),
            "goal_reached": sum(e["goal_reached"] for e in self.episodes),
            "violations": sum(e["violating_steps"] for e in self.episodes),
            "interventions": self._interventions() - (self.interventions_at_start or 0),
            "latency_ms_p50": pct(50),
            "latency_ms_p99": pct(99),
            "violating_episodes": sum(e["violating_steps"] > 0 for e in self.episodes),
            "latency_samples": int(lat.size),
            "controller_cpu_percent": float(status["cpu_percent"]) if "cpu_percent" in status else None,
            "goal_radius": self.robot.goal_radius,
            "complete": not self.timed_out,
        }

    def write_outputs(self, summary: dict[str, Any]) -> None:
        if self.summary_json:
            Path(self.summary_json).parent.mkdir(parents=True, exist_ok=True)
            Path(self.summary_json).write_text(json.dumps(summary, indent=2) + "\n")
            self.get_logger().info(f"summary written to {self.summary_json}")
        if self.report_dir and self.episodes:
            out = Path(self.report_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "episodes.json").write_text(json.dumps({"summary": summary, "episodes": self.episodes}, indent=2))
            violations = np.array([e["violating_steps"] for e in self.episodes])
            plot_trajectories(str(out / "closed_loop.png"), self.trajectories, violations,
                              np.ones(len(self.episodes), bool),
                              f"{len(self.episodes)} closed-loop episodes through DDS: "
                              f"{summary['goal_reached']} reached the goal, {summary['violations']} violating steps",
                              self.robot.draw_map)
            self.get_logger().info(f"report written to {out}/closed_loop.png and episodes.json")


def main(args: list[str] | None = None) -> int:
    node, stop = start_node("episode_monitor", EpisodeMonitor, args=args)
    if node is None:
        return 1
    spin(node, stop, lambda: node.done)
    node.timed_out |= stop.is_set()  # an interrupted watch is as incomplete as a timed-out one
    summary = node.summary()
    node.write_outputs(summary)
    shutdown(node)
    print(json.dumps(summary), flush=True)
    return 2 if node.timed_out else 0


if __name__ == "__main__":
    sys.exit(main())

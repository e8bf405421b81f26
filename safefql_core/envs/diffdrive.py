"""Differential-drive robot with a 2-D lidar among obstacles, simulated by IR-SIM.

The second robot of the project (issue 25, item 7): unlike the boat, nothing about it is
built into the learner. It is a TurtleBot-sized robot (radius 0.2 m, |v| <= 0.5 m/s,
|w| <= 1.5 rad/s) in a 6 m x 6 m walled arena with round and box obstacles
(`diffdrive_world.yaml`, an ordinary IR-SIM world file), driven by (v, w) commands every
0.1 s, sensing its pose and a 36-beam 360-degree lidar. It must reach the goal region
without touching anything.

Why IR-SIM (`ir-sim` on PyPI): a maintained, pure-Python robot simulator with exactly this
robot (diff-drive kinematics, a lidar2d sensor ray-cast against shapely geometry, collision
checks), ~2,000 steps/s headless, no GPU, no display, deterministic without its noise. Its
world file is the one description of the scene: the start sampler and the true clearance
below read the obstacles from the loaded world, not from a copy.

`DiffDriveEnv` batches independent IR-SIM worlds (one robot each) behind the boat's episode
API (`reset`, `step` -> readings, reward, cost, terminated, truncated, info), so behaviour
data, evaluation and the ROS node all run the same simulator. Unlike the boat it returns
raw sensor *readings* (pose, velocity, lidar ranges), not an observation vector: which
features the policy sees is the task YAML's choice (config/diffdrive.yaml), made once from
the messages, as on a real robot. A collision ends the robot's episode (`terminated`; IR-SIM
stops a robot that touches an obstacle, so nothing after it would be informative); reaching
the goal does not: the robot should stay there, and episodes run `episode_steps` steps.
"""
from __future__ import annotations

import contextlib
import functools
import io
import os
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

WORLD_FILE = "diffdrive_world.yaml"
DT = 0.1                    # s: the world's step_time, one command per step
EPISODE_STEPS = 300         # 30 s: the planner's detours around the obstacles at 0.5 m/s take up to ~25 s
GOAL_RADIUS = 0.3           # m: the goal counts as reached within this distance of its centre
START_CLEARANCE = 0.3       # m of free space around the robot at a start
START_GOAL_DISTANCE = 2.0   # m: starts are at least this far from the goal
EVAL_SET_SEED = 20261204
EVAL_SET_SIZE = 250         # issue 25 asks for >= 200 fixed evaluation starts
VALIDATION_SET_SEED = 20261205
VALIDATION_SET_SIZE = 200   # tuning set: as large as the test set's order, disjoint from it


@dataclass(frozen=True)
class World:
    """What the code outside IR-SIM needs to know about the loaded world file."""

    goal: np.ndarray              # (2,) m
    robot_radius: float           # m
    command_low: np.ndarray       # (2,) v m/s, w rad/s
    command_high: np.ndarray
    bounds: np.ndarray            # (2, 2) free square [[x0, y0], [x1, y1]] inside the walls
    obstacles: Any                # shapely geometry: the union of every obstacle (walls included)
    beams: int
    angle_min: float              # rad, in the robot frame
    angle_increment: float
    range_min: float              # m
    range_max: float

    @property
    def beam_angles(self) -> np.ndarray:
        return self.angle_min + self.angle_increment * np.arange(self.beams)


def _import_irsim():
    """irsim, imported quietly and without a display.

    On import IR-SIM tries interactive matplotlib backends in turn and prints each failure to
    stdout; a headless run would start every log (and a console script's JSON) with that.
    """
    os.environ.setdefault("MPLBACKEND", "Agg")
    with contextlib.redirect_stdout(io.StringIO()):
        import irsim
    return irsim


def make_irsim_env(seed: int = 0) -> Any:
    """One headless IR-SIM environment of the task's world (no figure, errors-only logging)."""
    irsim = _import_irsim()
    with resources.as_file(resources.files(__package__).joinpath(WORLD_FILE)) as path:
        return irsim.make(str(path), display=False, headless=True, log_level="ERROR", seed=seed)


@functools.cache
def world() -> World:
    """The task's world as loaded by IR-SIM (cached: the file is fixed)."""
    import shapely

    env = make_irsim_env()
    robot, lidar = env.robot, env.robot.lidar
    walls = [o.geometry for o in env.obstacle_list]
    width, height = env._world.width, env._world.height
    return World(
        goal=np.asarray(robot.goal, dtype=np.float64).reshape(-1)[:2],
        robot_radius=float(robot.radius),
        command_low=np.asarray(robot.vel_min, dtype=np.float64).reshape(-1),
        command_high=np.asarray(robot.vel_max, dtype=np.float64).reshape(-1),
        bounds=np.array([[0.0, 0.0], [width, height]]),
        obstacles=shapely.union_all(walls),
        beams=int(lidar.number),
        angle_min=float(lidar.angle_min),
        angle_increment=float(lidar.angle_inc),
        range_min=float(lidar.range_min),
        range_max=float(lidar.range_max),
    )


def clearance(positions: np.ndarray) -> np.ndarray:
    """Distance (m) from each robot centre (..., 2) to the nearest obstacle surface (0 inside one)."""
    import shapely

    positions = np.asarray(positions, dtype=np.float64)
    return shapely.distance(shapely.points(positions.reshape(-1, 2)), world().obstacles).reshape(positions.shape[:-1])


def margin(positions: np.ndarray) -> np.ndarray:
    """True safety margin l = robot radius - clearance: positive exactly when the robot touches
    an obstacle (the geometric truth the lidar-based margin of the task YAML approximates)."""
    return world().robot_radius - clearance(positions)


def goal_distance(positions: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(positions, dtype=np.float64)[..., :2] - world().goal, axis=-1)


def sample_starts(rng: np.random.Generator, n: int) -> np.ndarray:
    """n start poses (x, y, yaw): uniform in the arena with START_CLEARANCE of free space
    around the robot and at least START_GOAL_DISTANCE from the goal, any heading."""
    w = world()
    out = np.empty((0, 3))
    while len(out) < n:
        xy = rng.uniform(w.bounds[0], w.bounds[1], size=(2 * n, 2))
        yaw = rng.uniform(-np.pi, np.pi, size=(2 * n, 1))
        ok = (clearance(xy) >= w.robot_radius + START_CLEARANCE) & (goal_distance(xy) >= START_GOAL_DISTANCE)
        out = np.concatenate([out, np.hstack([xy, yaw])[ok]])
    return out[:n]


def evaluation_starts() -> np.ndarray:
    """The fixed test set of start poses: every reported number uses these, no choice does."""
    return sample_starts(np.random.default_rng(EVAL_SET_SEED), EVAL_SET_SIZE)


def validation_starts() -> np.ndarray:
    """A separate, disjoint set of start poses for tuning (thresholds, step counts, ...)."""
    return sample_starts(np.random.default_rng(VALIDATION_SET_SEED), VALIDATION_SET_SIZE)


# The fixed start sets by name (CLI choices of collect, evaluate and safefql-launch).
START_SETS = {"evaluation": evaluation_starts, "validation": validation_starts}


@dataclass
class Readings:
    """What the robots sense after a step, batched: the content of their Odometry and LaserScan.

    `ranges` follow sensor_msgs/LaserScan (REP 117): +inf where a beam saw nothing within
    range_max, -inf where the return was closer than range_min.
    """

    pose: np.ndarray       # [B, 3] x, y, yaw (rad, wrapped to [-pi, pi])
    velocity: np.ndarray   # [B, 2] v (m/s), w (rad/s) the robot moved with this step
    ranges: np.ndarray     # [B, beams] m

    def rows(self, index: np.ndarray) -> Readings:
        """The readings of some robots only."""
        return Readings(self.pose[index], self.velocity[index], self.ranges[index])


def scan_ranges(lidar: Any) -> np.ndarray:
    """One IR-SIM lidar's ranges in LaserScan convention (IR-SIM clips misses to range_max and
    blind-zone returns to range_min and flags both invalid)."""
    ranges = np.asarray(lidar.range_data, dtype=np.float64).copy()
    invalid = ~np.asarray(lidar.valid, dtype=bool)
    ranges[invalid] = np.where(ranges[invalid] <= lidar.range_min, -np.inf, np.inf)
    return ranges


@dataclass
class DiffDriveEnv:
    """`num_envs` independent IR-SIM worlds stepped in lockstep; see the module docstring.

    `step` takes commands in robot units [B, 2] (v m/s, w rad/s; IR-SIM clips them to the
    robot's limits) and returns (readings, reward, cost, terminated, truncated, info):
    reward -|p - goal| of the pre-step position (as the boat's), cost 1 on the step that
    collides, terminated at that collision; info has the true margin of the new pose, the
    goal distance and `active` (robots whose episode is still running before this step). A
    robot whose episode ended stays where it is and reports zeros until the next reset.
    """

    num_envs: int = 1
    seed: int | None = None
    episode_steps: int = EPISODE_STEPS
    t: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.envs = [make_irsim_env(seed=int(s)) for s in self.rng.integers(2**31, size=self.num_envs)]
        self.active = np.ones(self.num_envs, dtype=bool)

    def reset(self, starts: np.ndarray | None = None) -> Readings:
        """Start every robot's episode at `starts` [B, 3] (x, y, yaw), or at sampled safe starts."""
        if starts is None:
            starts = sample_starts(self.rng, self.num_envs)
        starts = np.asarray(starts, dtype=np.float64).reshape(-1, 3)
        if len(starts) != self.num_envs:
            raise ValueError(f"reset got {len(starts)} start poses for {self.num_envs} robots; "
                             "pass one (x, y, yaw) row per robot")
        for env, start in zip(self.envs, starts):
            env.robot.set_state(start.reshape(3, 1), init=True)
            env.reset()
        self.t = 0
        self.active[:] = True
        return self.readings()

    def readings(self) -> Readings:
        robots = [env.robot for env in self.envs]
        return Readings(pose=np.stack([r.state[:3, 0] for r in robots]).astype(np.float64),
                        velocity=np.stack([r.velocity[:2, 0] for r in robots]).astype(np.float64),
                        ranges=np.stack([scan_ranges(r.lidar) for r in robots]))

    def step(self, commands: np.ndarray):
        commands = np.asarray(commands, dtype=np.float64).reshape(self.num_envs, 2)
        if not np.isfinite(commands).all():
            raise ValueError(f"non-finite command {commands[~np.isfinite(commands).all(axis=1)].tolist()}")
        before = np.stack([env.robot.state[:2, 0] for env in self.envs])
        active = self.active.copy()
        reward = np.where(active, -goal_distance(before), 0.0)
        collided = np.zeros(self.num_envs, dtype=bool)
        for i in np.flatnonzero(active):
            env = self.envs[i]
            env.step(commands[i].reshape(2, 1))
            collided[i] = env.robot.collision
        self.t += 1
        self.active &= ~collided
        readings = self.readings()
        truncated = np.full(self.num_envs, self.t >= self.episode_steps) & self.active
        info = {"margin": margin(readings.pose[:, :2]), "goal_distance": goal_distance(readings.pose),
                "active": active}
        return readings, reward, collided.astype(np.float64), collided, truncated, info

"""The `evaluate` step on the diff-drive robot (task `diffdrive`).

The policy is run in the IR-SIM simulator from a fixed set of start poses and sees exactly
what it would see on the robot: each step's readings become the same Odometry and LaserScan
messages the ROS node publishes (and the bags hold), read through the run's or bundle's own
task spec; its action becomes a TwistStamped through the spec and drives the robot as the
node does. Scored per episode: no collision, goal reached (within GOAL_RADIUS at some step).

Starts (`--init-states`): `evaluation` (default, the 250 fixed test starts: report on them,
choose nothing on them), `validation` (200 other fixed starts: tune on these), or an (N, 3)
.npy of x, y, yaw.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from safefql_core.bags import DEFAULT_TYPESTORE, default_message, typestore
from safefql_core.decision_calibration import ClosedLoop
from safefql_core.envs import diffdrive
from safefql_core.envs import diffdrive_messages as messages
from safefql_core.envs.diffdrive_evaluation import Observe, rollout, summarize
from safefql_core.tasks import TaskSpec
from safefql_core.training import RunError

TASK = "diffdrive"


def load_starts(choice: str | None, episodes: int | None) -> np.ndarray:
    if choice is None or choice in diffdrive.START_SETS:
        starts = diffdrive.START_SETS[choice or "evaluation"]()
    else:
        file = Path(choice)
        if not file.is_file():
            raise RunError(f"--init-states: {choice} is neither {' nor '.join(diffdrive.START_SETS)} nor a .npy file")
        starts = np.load(file)
        if starts.ndim != 2 or starts.shape[1] != 3 or not np.isfinite(starts).all():
            raise RunError(f"--init-states {choice}: expected a finite (N, 3) array of x, y, yaw; got {starts.shape}")
    if episodes is not None and not 0 < episodes <= len(starts):
        raise RunError(f"--episodes must be between 1 and the {len(starts)} start poses")
    return starts[:episodes]


def reader(spec: TaskSpec):
    """Readings -> the raw values of the spec's state inputs, through Odometry and LaserScan
    messages filled as the ROS node fills them (the spec's inputs are matched to them by
    message type)."""
    store = typestore(DEFAULT_TYPESTORE)
    published = {messages.TYPES[messages.ODOM]: lambda m, r, i: messages.fill_odometry(m, r.pose[i], r.velocity[i], 0),
                 messages.TYPES[messages.SCAN]: lambda m, r, i: messages.fill_scan(m, r.ranges[i], 0)}
    inputs = dict(spec.inputs)
    used = spec.state_inputs()
    missing = [f"{name} ({inputs[name].type})" for name in used if inputs[name].type not in published]
    if missing:
        raise RunError(f"the spec observes {', '.join(missing)}, which the diff-drive robot does not publish "
                       f"(it publishes {' and '.join(published)})")
    msgs = {name: default_message(store, inputs[name].type) for name in used}

    def read(readings: diffdrive.Readings) -> dict[str, np.ndarray]:
        return {name: np.stack([inputs[name].read(published[inputs[name].type](msgs[name], readings, i))
                                for i in range(len(readings.pose))]) for name in used}

    return read


def observer(spec: TaskSpec) -> Observe:
    """Readings -> the spec's observations, as the robot's messages give them (`reader`)."""
    read = reader(spec)
    return lambda readings: spec.observations(read(readings))


def closed_loop(spec: TaskSpec) -> ClosedLoop:
    """The robot in closed loop as calibration uses it: a policy's actions through the spec's
    command, and each episode's max margin, the spec's (what it calls unsafe, which the
    safety critic learned) or the simulator's true one (a collision), whichever is larger."""
    read, observe, to_command = reader(spec), observer(spec), commander(spec)

    def max_margins(policy, starts: np.ndarray, steps: int) -> np.ndarray:
        margin = lambda readings: spec.signals(read(readings))[1]  # noqa: E731
        return rollout(policy, observe, to_command, starts, steps, margin=margin)["max_margin"]

    return max_margins


def commander(spec: TaskSpec):
    """[-1, 1] actions -> (v, w), through the spec's command message, as the robot receives it.

    Only a spec of this robot is evaluated here (its observation may be any features of its
    messages): the command type, its bounds (the robot's limits) and the period must be its.
    """
    w = diffdrive.world()
    if spec.command.type != messages.TYPES[messages.CMD_VEL]:
        raise RunError(f"the spec commands {spec.command.type}; the diff-drive robot takes "
                       f"{messages.TYPES[messages.CMD_VEL]}")
    if (spec.action_low, spec.action_high) != (tuple(w.command_low), tuple(w.command_high)) \
            or not np.isclose(spec.control_period, diffdrive.DT):
        raise RunError(f"the spec is not the diff-drive robot's: command bounds {spec.action_low} .. "
                       f"{spec.action_high} every {spec.control_period} s, the robot's are {tuple(w.command_low)} .. "
                       f"{tuple(w.command_high)} every {diffdrive.DT} s; a bundle of another robot is not evaluated "
                       "in this simulator")
    msg = default_message(typestore(DEFAULT_TYPESTORE), spec.command.type)
    return lambda actions: np.stack([messages.command_of(spec.fill_command(msg, a)) for a in actions])


def evaluate(policy, spec: TaskSpec, init_states: str | None, episodes: int | None, steps: int | None,
             header: dict, keep_trajectories: bool = False) -> tuple[dict, dict[str, np.ndarray]]:
    """Roll out from the first `episodes` starts of `init_states`: the summary and the rollout."""
    starts = load_starts(init_states, episodes)
    steps = steps or diffdrive.EPISODE_STEPS
    result = rollout(policy, observer(spec), commander(spec), starts, steps, keep_trajectories)
    return {**header, "starts": init_states or "evaluation", "steps": steps, **summarize(result)}, result


def describe(summary: dict) -> str:
    """The one line `evaluate` prints about a diff-drive summary."""
    modes = summary.get("decision_modes")
    return (f"{summary['variant']} seed {summary['seed']} on {TASK}: {summary['count']} episodes from the "
            f"{summary['starts']} starts, zero-collision {summary['zero_collision_rate']:.1%}, "
            f"goal {summary['goal_reached_rate']:.1%}, mean return {summary['mean_return']:.1f}"
            + (f" | δ*={summary['threshold']:.3f}, decisions {modes}" if modes is not None else ""))

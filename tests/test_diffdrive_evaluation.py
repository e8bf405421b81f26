"""Closed-loop evaluation on the diff-drive robot: rates, and only running robots are asked to act."""
import numpy as np

from safefql_core.envs import diffdrive
from safefql_core.envs import diffdrive_behaviour as behaviour
from safefql_core.envs.diffdrive_evaluation import rollout, summarize

HIGH = diffdrive.world().command_high


def observe(readings: diffdrive.Readings) -> np.ndarray:
    return np.hstack([readings.pose, readings.ranges])


def test_planner_is_safe_and_reaches_the_goal_reckless_driving_is_not():
    starts = np.array([[0.5, 0.5, 0.0], [4.6, 3.0, np.pi / 2]])
    planner = lambda obs: behaviour.planner_command(obs[:, :3], obs[:, 3:]) / HIGH  # noqa: E731
    summary = summarize(rollout(planner, observe, lambda a: a * HIGH, starts))
    assert summary["zero_collision_rate"] == 1.0 and summary["goal_reached_rate"] == 1.0
    batches = []

    def reckless(obs):
        batches.append(len(obs))
        return behaviour.reckless_command(obs[:, 3:]) / HIGH

    result = rollout(reckless, observe, lambda a: a * HIGH, starts, steps=60)
    assert result["collided"].all() and summarize(result)["zero_collision_rate"] == 0.0
    assert batches[0] == 2 and batches[-1] == 1 and len(batches) < 60  # finished robots are not asked

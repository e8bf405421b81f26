"""Closed-loop evaluation on the diff-drive robot: rates, and only running robots are asked to act."""
import numpy as np
import yaml

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
        return behaviour.reckless_command(obs[:, 3:], np.zeros(len(obs), dtype=bool)) / HIGH

    result = rollout(reckless, observe, lambda a: a * HIGH, starts, steps=60)
    assert result["collided"].all() and summarize(result)["zero_collision_rate"] == 0.0
    assert batches[0] == 2 and batches[-1] == 1 and len(batches) < 60  # finished robots are not asked


def test_trajectories_start_at_the_starts_and_a_collided_robot_stays_where_it_stopped():
    starts = np.array([[0.5, 0.5, 0.0], [0.5, 3.0, np.pi]])     # the second faces the west wall
    forward = lambda obs: np.tile([1.0, 0.0], (len(obs), 1))   # noqa: E731
    result = rollout(forward, observe, lambda a: a * HIGH, starts, steps=40, keep_trajectories=True)
    paths = result["trajectories"]
    assert paths.shape == (2, 41, 2) and np.allclose(paths[:, 0], starts[:, :2])
    assert result["collided"][1] and np.allclose(paths[1, -5:], paths[1, -1])
    assert "trajectories" not in rollout(forward, observe, lambda a: a * HIGH, starts, steps=2)


def test_the_map_fills_the_walls_and_obstacles_not_the_free_arena():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from safefql_core.envs.diffdrive_evaluation import draw_map

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    draw_map(ax)
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3]

    def grey(point) -> bool:   # the rendered colour at a point of the arena: the obstacles' grey, not white
        x, y = ax.transData.transform(point)
        return bool(image[int(round(image.shape[0] - y)), int(round(x))].max() < 200)

    plt.close(fig)
    free = diffdrive.sample_starts(np.random.default_rng(0), 20)[:, :2]
    assert not any(grey(p) for p in free)
    assert grey((-0.1, 3.0)) and grey((3.0, 3.0))                # the west wall; the central disc


def test_plot_draws_every_episode_by_its_outcome(tmp_path):
    from safefql_core.envs.diffdrive_evaluation import plot_episodes

    starts = np.array([[0.5, 0.5, 0.0], [0.5, 3.0, np.pi]])
    planner = lambda obs: behaviour.planner_command(obs[:, :3], obs[:, 3:]) / HIGH  # noqa: E731
    result = rollout(planner, observe, lambda a: a * HIGH, starts, steps=20, keep_trajectories=True)
    plot_episodes(str(tmp_path / "map.png"), result, "planner")
    assert (tmp_path / "map.png").stat().st_size > 10_000


def test_calibration_outcome_is_the_larger_of_the_specs_margin_and_a_collision():
    """closed_loop(spec): each episode's max margin, the spec's (here with a 0.3 m buffer on
    the lidar clearance) or the simulator's true one, whichever is larger."""
    from pathlib import Path

    from safefql_core.pipeline.diffdrive_evaluate import closed_loop, reader
    from safefql_core.tasks import TaskSpec

    doc = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "diffdrive.yaml").read_text())["spec"]
    doc["margin"] = "0.3 - obstacle_clearance"
    spec = TaskSpec.from_dict(doc, "diffdrive")
    starts = np.array([[0.5, 3.0, np.pi], [2.5, 1.0, 0.0]])   # facing the west wall; still in open space
    drive_west = lambda obs: np.where(obs[:, :1] < 1.0, [[1.0, 0.0]], [[0.0, 0.0]])  # noqa: E731
    y = closed_loop(spec)(drive_west, starts, 40)
    assert y[0] >= 0.3 - 1e-9        # it hit the wall: the spec's margin says so 0.3 before the contact
    still = diffdrive.DiffDriveEnv(1, seed=0).reset(starts[1:])
    by_spec = spec.signals(reader(spec)(still))[1][0]
    assert by_spec > diffdrive.margin(still.pose[:, :2])[0]      # the buffer makes the spec's the larger
    assert y[1] == by_spec
    doc["margin"] = "-obstacle_clearance - 1"                   # a spec blind to the wall: the collision still counts
    assert closed_loop(TaskSpec.from_dict(doc, "diffdrive"))(drive_west, starts, 40)[0] >= -1e-9

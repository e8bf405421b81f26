"""The diff-drive task in IR-SIM: world, start sets, episode API, lidar convention."""
import numpy as np
import pytest

from safefql_core.envs import diffdrive


def test_world_is_read_from_the_irsim_world_file():
    w = diffdrive.world()
    assert w.goal.tolist() == [5.0, 5.0]
    assert w.robot_radius == pytest.approx(0.2)
    assert w.command_low.tolist() == [-0.5, -1.5] and w.command_high.tolist() == [0.5, 1.5]
    assert w.beams == 36 and w.angle_increment == pytest.approx(np.radians(10))
    assert w.beam_angles[0] == pytest.approx(-np.radians(175)) and w.beam_angles[-1] == pytest.approx(np.radians(175))
    # a point inside the round obstacle at (2, 2), r 0.5, and one in free space
    assert diffdrive.clearance(np.array([[2.0, 2.0], [0.7, 3.0]])).tolist() == pytest.approx([0.0, 0.7])


def test_start_sets_are_fixed_safe_and_disjoint():
    test, val = diffdrive.evaluation_starts(), diffdrive.validation_starts()
    assert test.shape == (250, 3) and val.shape == (200, 3)
    assert np.array_equal(test, diffdrive.evaluation_starts())  # seeded: the same every call
    for starts in (test, val):
        assert (diffdrive.clearance(starts[:, :2]) >= 0.2 + diffdrive.START_CLEARANCE).all()
        assert (diffdrive.goal_distance(starts) >= diffdrive.START_GOAL_DISTANCE).all()
    assert not (np.abs(test[:, None, :2] - val[None, :, :2]).sum(axis=-1) < 1e-9).any()


def test_driving_into_the_west_wall_collides_and_ends_the_episode():
    env = diffdrive.DiffDriveEnv(2, seed=0)
    starts = np.array([[1.0, 3.0, np.pi], [0.5, 3.0, 0.0]])  # facing the wall 1 m away / away from it
    readings = env.reset(starts)
    ahead = np.abs(diffdrive.world().beam_angles) < np.radians(10)  # the beams at +-5 degrees
    assert readings.ranges[0, ahead] == pytest.approx(1.0 / np.cos(np.radians(5)))
    command = np.array([[0.5, 0.0], [0.0, 0.0]])
    for step in range(1, 30):
        readings, reward, cost, terminated, truncated, info = env.step(command)
        if terminated[0]:
            break
    # 0.8 m of free space at 0.05 m per step: the 16th or 17th step touches the wall
    assert step in (16, 17) and cost.tolist() == [1.0, 0.0] and not terminated[1]
    assert info["margin"][0] > 0 and info["margin"][1] < 0
    # the lidar sees the same contact the geometry does: radius - closest range = true margin
    assert 0.2 - readings.ranges[0].min() == pytest.approx(info["margin"][0], abs=2e-3)
    pose = readings.pose[0].copy()
    readings, reward, cost, terminated, *_ = env.step(command)
    assert np.array_equal(readings.pose[0], pose) and reward[0] == 0 and cost[0] == 0 and not terminated[0]
    assert env.active.tolist() == [False, True]


def test_reward_is_minus_the_pre_step_goal_distance_and_episodes_time_out():
    env = diffdrive.DiffDriveEnv(1, seed=0, episode_steps=3)
    start = np.array([[1.0, 3.0, 0.0]])
    env.reset(start)
    _, reward, *_ = env.step(np.zeros((1, 2)))
    assert reward[0] == pytest.approx(-np.hypot(4.0, 2.0))
    truncated = [env.step(np.zeros((1, 2)))[4][0] for _ in range(2)]
    assert truncated == [False, True]


def test_lidar_ranges_follow_the_laserscan_convention():
    env = diffdrive.DiffDriveEnv(1, seed=0)
    readings = env.reset(np.array([[0.5, 0.5, np.pi / 2]]))  # facing north along the open west side
    ranges, w = readings.ranges[0], diffdrive.world()
    forward = np.abs(w.beam_angles) < np.radians(10)
    assert np.isposinf(ranges[forward]).all()  # nothing within range_max: +inf, not range_max
    finite = ranges[np.isfinite(ranges)]
    assert ((finite >= w.range_min) & (finite <= w.range_max)).all()
    assert ranges[np.abs(w.beam_angles) > np.radians(170)] == pytest.approx(0.5 / np.cos(np.radians(5)))


def test_reset_rejects_a_wrong_number_of_starts():
    with pytest.raises(ValueError, match="one \\(x, y, yaw\\) row per robot"):
        diffdrive.DiffDriveEnv(2, seed=0).reset(np.zeros((1, 3)))

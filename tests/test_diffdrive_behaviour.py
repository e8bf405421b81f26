"""The diff-drive behaviour mix: deterministic, and covering both sides of the safety boundary."""
import numpy as np

from safefql_core.envs import diffdrive
from safefql_core.envs import diffdrive_behaviour as behaviour


def drive(policy, starts: np.ndarray, steps: int = diffdrive.EPISODE_STEPS):
    """Closed loop of one scripted family: (collided, reached the goal) per start."""
    env = diffdrive.DiffDriveEnv(len(starts), seed=0)
    readings = env.reset(starts)
    reached = np.zeros(len(starts), dtype=bool)
    for _ in range(steps):
        readings, *_ = env.step(policy(readings))
        reached |= env.active & (diffdrive.goal_distance(readings.pose) <= diffdrive.GOAL_RADIUS)
    return ~env.active, reached


def test_the_planner_reaches_the_goal_around_obstacles_and_reckless_driving_collides():
    # from the south-west corner (obstacles in between), from behind the wall south of the goal,
    # and facing the west wall
    starts = np.array([[0.5, 0.5, 0.0], [4.6, 3.0, np.pi / 2], [0.6, 3.0, np.pi]])
    collided, reached = drive(lambda r: behaviour.planner_command(r.pose, r.ranges), starts)
    assert not collided.any() and reached.all()
    for backwards in (False, True):
        commands = []

        def reckless(r):
            commands.append(behaviour.reckless_command(r.ranges, np.full(len(starts), backwards)))
            return commands[-1]

        collided, _ = drive(reckless, starts, steps=60)
        assert collided.all()
        driven = np.concatenate(commands)[:, 0]
        assert ((driven < 0) if backwards else (driven > 0)).all()   # into the return, backwards or not


def test_collection_is_deterministic_and_records_whole_episodes():
    starts = diffdrive.validation_starts()[:6]
    a = behaviour.collect(6, seed=3, starts=starts, progress=False)
    b = behaviour.collect(6, seed=3, starts=starts, progress=False)
    for name in behaviour.Episodes.__dataclass_fields__:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert np.array_equal(a.pose[:, 0], starts)
    assert a.commands.shape == (6, diffdrive.EPISODE_STEPS, 2) and a.pose.shape[1] == diffdrive.EPISODE_STEPS + 1
    low, high = diffdrive.world().command_low, diffdrive.world().command_high
    assert ((a.commands >= low) & (a.commands <= high)).all()
    # an episode that collided records CONTACT_STEPS more steps stopped in contact; the others run to the time-out
    assert a.collided.any() and not a.collided.all()
    contact = diffdrive.margin(a.pose[:, :, :2]) >= -1e-9          # touching counts as a collision (IR-SIM)
    for e in range(6):
        first = np.argmax(contact[e]) if contact[e].any() else None
        assert (first is not None) == a.collided[e]
        expected = (min(first + behaviour.CONTACT_STEPS, diffdrive.EPISODE_STEPS) if a.collided[e]
                    else diffdrive.EPISODE_STEPS)
        assert a.lengths[e] == expected
        if a.collided[e]:
            held = slice(first, a.lengths[e] + 1)
            assert contact[e, held].all() and (a.pose[e, held] == a.pose[e, first]).all()
    c = behaviour.collect(6, seed=4, starts=starts, progress=False)
    assert not np.array_equal(a.commands, c.commands)


def test_summary_reports_rates_per_family():
    episodes = behaviour.collect(4, seed=0, progress=False)
    summary = episodes.summary()
    assert summary["episodes"] == 4
    assert sum(f["episodes"] for f in summary["per_family"].values()) == 4
    assert summary["zero_collision_rate"] == 1 - episodes.collided.mean()

"""The boat behaviour mix: reproducible, every family present, and the `switching` family
logs real escapes (the data the safety critic needs upstream of the discs)."""
import numpy as np

from safefql_core.envs import boat, boat_behaviour


def test_collect_is_reproducible_and_draws_every_family():
    a, b = (boat_behaviour.collect(60, seed=5, progress=False) for _ in range(2))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    drawn = set(a["family"][:: boat.EPISODE_STEPS].tolist())
    assert drawn == set(range(len(boat_behaviour.MIX)))
    assert sum(boat_behaviour.MIX.values()) == 1.0


def test_escape_heading_saves_the_hard_starts():
    # Evaluation starts 106, 230, 372, 377: feasible, but upstream of a disc with the current
    # carrying the boat onto it; the certified reference keeps 0.02-0.27 clearance there.
    # Goal-seeking from them violates; the escape alone keeps every one of them safe.
    starts = boat.evaluation_states()[[106, 230, 372, 377]]
    worst = {}
    for name, policy in {"escape": boat_behaviour.escape_heading, "goal": boat_behaviour.goal_heading}.items():
        s, worst[name] = starts.copy(), np.full(len(starts), -np.inf)
        for t in range(boat.EPISODE_STEPS):
            if t % boat_behaviour.REPLAN_EVERY == 0:
                heading = policy(s)
            s = boat.dynamics(s, heading)
            worst[name] = np.maximum(worst[name], boat.margin(s))
    assert (worst["escape"] < 0).all()
    assert (worst["goal"] > 0).any()


def test_switching_alternates_drift_and_escape_only_in_its_episodes():
    rng = np.random.default_rng(0)
    active = np.array([True, True, False])
    schedule = boat_behaviour.SwitchingSchedule(active, rng)
    goal, reckless, escape = (np.full((3, 2), v) for v in (1.0, 2.0, 3.0))
    headings = np.array([schedule.heading(t, goal, reckless, escape) for t in range(boat.EPISODE_STEPS)])
    assert (headings[:, 2] == 0).all()                               # not a switching episode
    for ep in (0, 1):
        phases = headings[:, ep, 0]
        drift = 2.0 if schedule.reckless_drift[ep] else 1.0
        assert set(np.unique(phases)) == {drift, 3.0}
        segments = 1 + np.count_nonzero(np.diff(phases))
        lo, hi = boat_behaviour.SWITCH_SEGMENT_STEPS
        assert boat.EPISODE_STEPS // hi <= segments <= boat.EPISODE_STEPS // lo + 1

"""Causal zero-order-hold alignment on the control grid: stamps in, indices and transitions out."""
import numpy as np
import pytest
from test_tasks import boat_dict

from safefql_core.alignment import (
    AlignmentError,
    AlignmentReport,
    TimeSeries,
    Track,
    align,
    build_transitions,
    control_grid,
    episode_bounds,
    latest_at_or_before,
)
from safefql_core.envs import boat
from safefql_core.tasks import TaskSpec

MS = 1_000_000
# 10 ms period, 25 ms max age (2.5 periods, as for the boat)
SPEC = TaskSpec.from_dict(boat_dict(control_period=0.01, max_age=0.025), "boat")


def series(stamps_ms, values) -> TimeSeries:
    return TimeSeries(np.asarray(stamps_ms, dtype=np.int64) * MS, np.asarray(values, dtype=np.float64))


def states(stamps_ms) -> TimeSeries:
    """State k is (k, -k): its value tells which sample was picked."""
    k = np.arange(len(stamps_ms), dtype=np.float64)
    return series(stamps_ms, np.stack([k, -k], axis=1) * 0.01)


def commands(stamps_ms) -> TimeSeries:
    k = np.arange(len(stamps_ms), dtype=np.float64)
    return series(stamps_ms, np.stack([k, k], axis=1) * 0.01)


def test_latest_at_or_before_picks_the_latest_fresh_sample():
    stamps = np.array([0, 10, 20], dtype=np.int64)
    ticks = np.array([-5, 0, 5, 10, 19, 25, 31, 33])
    np.testing.assert_array_equal(latest_at_or_before(stamps, ticks, max_age=12),
                                  [-1, 0, 0, 1, 1, 2, 2, -1])  # -1: none yet / older than 12
    np.testing.assert_array_equal(latest_at_or_before(stamps, ticks, max_age=12, strictly_before=True),
                                  [-1, -1, 0, 0, 1, 2, 2, -1])


def test_gaps_split_episodes_and_each_gets_its_own_grid():
    stamps = np.array([0, 10, 20, 31, 100, 110], dtype=np.int64)
    bounds = episode_bounds(stamps, max_gap=25)
    np.testing.assert_array_equal(bounds, [[0, 3], [4, 5]])
    ticks, episode = control_grid(stamps[bounds], period=10)
    np.testing.assert_array_equal(ticks, [0, 10, 20, 30, 100, 110])
    np.testing.assert_array_equal(episode, [0, 0, 0, 0, 1, 1])


def test_transitions_pair_state_with_the_command_in_force_until_the_next_tick():
    # The controller answers each state 3 ms late: sampling commands at the tick itself
    # would pair every state with the previous command.
    t = np.arange(6) * 10
    arrays, report = build_transitions(SPEC, {"state": states(t), "command": commands(t[:-1] + 3)})
    assert report.transitions == 5 and report.dropped == {}
    np.testing.assert_allclose(arrays["observations"][:, 0], np.arange(5) * 0.01, atol=1e-7)
    np.testing.assert_allclose(arrays["next_observations"][:, 0], np.arange(1, 6) * 0.01, atol=1e-7)
    np.testing.assert_allclose(arrays["actions"][:, 0], np.arange(5) * 0.01, atol=1e-7)
    np.testing.assert_array_equal(arrays["timeouts"], [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(arrays["terminals"], np.zeros(5))
    obs = arrays["observations"].astype(np.float64)
    np.testing.assert_allclose(arrays["rewards"], boat.reward(obs), rtol=1e-6)
    np.testing.assert_allclose(arrays["margins"], boat.margin(obs), rtol=1e-6)
    np.testing.assert_array_equal(arrays["costs"], arrays["margins"] > 0)


def test_zero_order_hold_repeats_a_late_state_and_never_interpolates():
    # State 2 arrives 8 ms late (still within max age): tick 20 holds state 1.
    arrays, _ = build_transitions(SPEC, {"state": states([0, 10, 28, 30]), "command": commands([0, 10, 20])})
    np.testing.assert_allclose(arrays["observations"][:, 0], [0.0, 0.01, 0.01], atol=1e-7)
    np.testing.assert_allclose(arrays["next_observations"][:, 0], [0.01, 0.01, 0.03], atol=1e-7)


def test_stale_command_drops_ticks_and_cuts_the_trajectory_with_a_time_out():
    t = np.arange(10) * 10
    # commands for ticks 0-2 and 6-8 only: tick 3 still holds the command of tick 2 (20 ms
    # old at tick 4), ticks 4 and 5 have none within 25 ms of their successor
    cmd = commands([0, 10, 20, 60, 70, 80])
    arrays, report = build_transitions(SPEC, {"state": states(t), "command": cmd})
    assert report.dropped == {"no command within hold": 2}
    assert report.transitions == 7 and report.timeouts == 2
    np.testing.assert_allclose(arrays["observations"][:, 0] * 100, [0, 1, 2, 3, 6, 7, 8], atol=1e-5)
    np.testing.assert_array_equal(arrays["timeouts"], [0, 0, 0, 1, 0, 0, 1])


def test_no_transition_crosses_a_gap_in_the_state_stream():
    t = np.r_[np.arange(4) * 10, 1000 + np.arange(3) * 10]
    arrays, report = build_transitions(SPEC, {"state": states(t), "command": commands(t)})
    assert report.episodes == 2 and report.transitions == 5 and report.dropped == {}
    np.testing.assert_array_equal(arrays["timeouts"], [0, 0, 1, 0, 1])
    jumps = np.abs(arrays["next_observations"] - arrays["observations"]).max(axis=1)
    assert jumps.max() < 0.011  # one state index apart, never from episode 1 to episode 2


def test_non_finite_samples_are_refused_or_dropped_with_counts():
    t = np.arange(8) * 10
    s = states(t)
    s.values[3, 1] = np.nan
    c = commands(t)
    c.values[6, 0] = np.inf
    with pytest.raises(AlignmentError, match=r"non-finite values in 1 on /boat/odom \(state\), "
                                             r"1 on /boat/cmd_vel \(command\); pass --on-nonfinite drop"):
        build_transitions(SPEC, {"state": s, "command": c})
    arrays, report = build_transitions(SPEC, {"state": s, "command": c}, on_nonfinite="drop")
    assert report.nonfinite_samples == {"state": 1, "command": 1}
    # state 3 spoils transitions 2 (as next state) and 3; command 6 spoils transition 6
    assert report.dropped == {"non-finite next state": 1, "non-finite state": 1, "non-finite command": 1}
    assert report.transitions == 4 and np.isfinite(arrays["observations"]).all()


def test_reward_read_from_a_topic_is_aligned_like_the_state():
    spec = TaskSpec.from_dict(boat_dict(control_period=0.01, max_age=0.025, reward={
        "topic": "/boat/reward", "type": "std_msgs/msg/Float64", "field": "data"}), "boat")
    t = np.arange(4) * 10
    reward = series(t + 1, [[5.0], [6.0], [7.0], [8.0]])  # 1 ms after each tick: not yet there
    arrays, report = build_transitions(spec, {"state": states(t), "command": commands(t), "reward": reward})
    assert report.dropped == {"no reward within max_age": 1}
    np.testing.assert_array_equal(arrays["rewards"], [5.0, 6.0])


def test_out_of_bounds_commands_are_clipped_and_counted():
    t = np.arange(3) * 10
    arrays, report = build_transitions(SPEC, {"state": states(t), "command": series(t, [[2.0, 0], [0, 0], [0, 0]])})
    assert report.clipped_actions == 1 and arrays["actions"].max() == 1.0
    # below the lower bound too, and a command out of bounds in both fields counts once
    low = series(t, [[2.0, 0], [-3.0, -5.0], [0, 0]])
    arrays, report = build_transitions(SPEC, {"state": states(t), "command": low})
    assert report.clipped_actions == 2 and arrays["actions"].min() == -1.0


@pytest.mark.parametrize("state_ms, command_ms, message", [
    ([], [0], r"no samples on /boat/odom \(state\)"),
    ([0, 10, 20], [20], "no transition survived"),
])
def test_unusable_recordings_are_refused(state_ms, command_ms, message):
    with pytest.raises(AlignmentError, match=message):
        build_transitions(SPEC, {"state": states(state_ms), "command": commands(command_ms)})


def test_each_state_track_has_its_own_max_age_and_an_episode_needs_all_of_them():
    # odometry every 10 ms (max age 25 ms), a lidar every 50 ms (max age 120 ms) that is
    # silent from 200 to 400 ms: the episode is cut there although odometry runs on.
    odom_ms = np.arange(0, 601, 10)
    scan_ms = np.r_[np.arange(0, 201, 50), np.arange(400, 601, 50)]
    scan = series(scan_ms, np.arange(len(scan_ms), dtype=np.float64)[:, None])
    aligned = align([Track("odom", states(odom_ms), 0.025), Track("scan", scan, 0.12)],
                    Track("command", commands(odom_ms), 0.025), control_period=0.01)
    r = aligned.report
    assert r.episodes == 2 and r.dropped == {} and r.transitions == 20 + 20
    ticks_ms = np.round(aligned.at("odom")[:, 0] * 1000).astype(int)  # odom k sits at 10 k ms
    np.testing.assert_array_equal(aligned.at("scan")[:, 0], np.searchsorted(scan_ms, ticks_ms, side="right") - 1)
    np.testing.assert_array_equal(aligned.timeouts.nonzero()[0], [19, 39])
    # the lidar changes every 5th tick: 4 of 5 transitions hold its sample; odometry never
    assert r.held_states == {"scan": 32}


def test_sparse_commands_are_held_for_the_hold_not_the_state_max_age():
    t = np.arange(0, 1001, 10)
    planner = commands([0, 500])  # a 2 Hz planner
    arrays, report = build_transitions(SPEC, {"state": states(t), "command": planner})
    assert report.dropped == {"no command within hold": 100 - 2 - 2}  # 2 ticks after each command
    held = TaskSpec.from_dict(boat_dict(control_period=0.01, max_age=0.025, **{"command.hold": 0.5}), "boat")
    arrays, report = build_transitions(held, {"state": states(t), "command": planner})
    assert report.dropped == {} and report.transitions == 100
    np.testing.assert_allclose(arrays["actions"][:, 0], np.where(np.arange(100) < 50, 0.0, 0.01), atol=1e-7)
    # the state's max age is not loosened by the hold
    late = states(np.r_[t[:50], t[53:]])
    assert build_transitions(held, {"state": late, "command": planner})[1].episodes == 2


def test_streams_on_different_clocks_are_named():
    sim = states(np.arange(0, 101, 10))  # header stamps in sim time: 0 to 0.1 s
    wall = series(1_796_000_000_000 + np.arange(0, 101, 10), np.zeros((11, 2)))  # receive times, 2026
    spec = TaskSpec.from_dict(boat_dict(control_period=0.01, max_age=0.025,
                                        **{"state.stamp": "header", "command.stamp": "receive",
                                           "command.frame_id": None}), "boat")
    with pytest.raises(AlignmentError) as error:
        build_transitions(spec, {"state": sim, "command": wall})
    message = str(error.value)
    assert ("/boat/cmd_vel (command) (receive stamps, 2026-11-30 00:53:20 to 2026-11-30 00:53:20 UTC: "
            "wall time)") in message
    assert "/boat/odom (state) (header stamps, 0.000 s to 0.100 s since zero: sim time)" in message
    assert "different clocks" in message and "`stamp: receive` on both" in message and "use_sim_time" in message
    with pytest.raises(AlignmentError, match=r"the stamps of scan \(0.500 s to 0.600 s since zero: sim time\) "
                                             r"never overlap those of odom"):
        align([Track("odom", sim, 0.025), Track("scan", states([500, 600]), 0.025)],
              Track("command", commands(np.arange(0, 101, 10)), 0.025), control_period=0.01)


def test_state_tracks_that_never_run_together_are_refused():
    odom = states(np.r_[np.arange(0, 101, 10), np.arange(300, 401, 10)])
    scan = states(np.arange(150, 251, 10))  # only while odometry is silent
    with pytest.raises(AlignmentError, match=r"the state tracks \['odom', 'scan'\] are never all running at once"):
        align([Track("odom", odom, 0.025), Track("scan", scan, 0.025)], Track("command", commands([0]), 0.5),
              control_period=0.01)
    with pytest.raises(AlignmentError, match="unique track names"):
        align([Track("state", odom, 0.025)], Track("state", commands([0]), 0.5), control_period=0.01)


# Time going backwards and duplicate stamps (issue 26 item 9): detected, counted, refused
# or handled explicitly, never collapsed silently.

def test_time_going_backwards_beyond_max_age_is_refused_with_the_fix():
    # one topic holding two runs over the same span: header stamps restart at 0
    restarted = states([0, 10, 20, 30, 0, 10, 20, 30])
    with pytest.raises(AlignmentError) as error:
        build_transitions(SPEC, {"state": restarted, "command": commands(np.arange(8) * 10)})
    assert ("time goes backwards on /boat/odom (state): 3 sample(s) stamped before an earlier one, by up to "
            "0.030 s (more than its max_age 0.025 s)") in str(error.value)
    assert "into its own bag" in str(error.value) and "`stamp: receive`" in str(error.value)


def test_samples_out_of_order_within_max_age_are_sorted_and_counted():
    # state 2 (20 ms) arrives before state 1 (10 ms); commands too. Unsorted, tick 10 would
    # find no state at all, and tick 20 state 1.
    s = states([0, 10, 20, 30])
    shuffled = TimeSeries(s.stamps[[0, 2, 1, 3]], s.values[[0, 2, 1, 3]])
    c = commands([0, 10, 20])
    arrays, report = build_transitions(SPEC, {"state": shuffled, "command": TimeSeries(c.stamps[[1, 0, 2]],
                                                                                        c.values[[1, 0, 2]])})
    assert report.reordered_samples == {"state": 1, "command": 1} and report.dropped == {}
    np.testing.assert_allclose(arrays["observations"][:, 0], [0.0, 0.01, 0.02], atol=1e-7)
    np.testing.assert_allclose(arrays["next_observations"][:, 0], [0.01, 0.02, 0.03], atol=1e-7)
    np.testing.assert_allclose(arrays["actions"][:, 0], [0.0, 0.01, 0.02], atol=1e-7)


def test_exact_duplicate_samples_are_dropped_and_counted():
    s = states([0, 10, 20, 30])
    twice = TimeSeries(s.stamps[[0, 1, 1, 2, 3]], s.values[[0, 1, 1, 2, 3]])  # sample 1 recorded twice
    arrays, report = build_transitions(SPEC, {"state": twice, "command": commands([0, 10, 20])})
    assert report.duplicate_samples == {"state": 1} and report.transitions == 3 and report.held_states == {}
    assert not (arrays["observations"] == arrays["next_observations"]).all(axis=1).any()


def test_every_array_has_one_row_per_transition_and_none_is_terminal():
    """A bag has no terminal signal: every transition is non-terminal, one value each."""
    arrays, report = build_transitions(SPEC, {"state": states([0, 10, 20, 30]), "command": commands([0, 10, 20])})
    assert {k: len(v) for k, v in arrays.items()} == dict.fromkeys(arrays, report.transitions)
    assert arrays["terminals"].tolist() == [0.0] * report.transitions


def test_a_copy_that_is_nan_where_the_other_is_not_is_no_copy():
    """NaN equals NaN for the exact-copy test (a sensor's NaN recorded twice is one sample), but
    a NaN against a number is a different value: the stamp is ambiguous, not a duplicate."""
    s = states([0, 10, 20, 30])
    twice = TimeSeries(s.stamps[[0, 1, 1, 2, 3]], s.values[[0, 1, 1, 2, 3]].copy())
    twice.values[2, 0] = np.nan
    with pytest.raises(AlignmentError, match="samples that share a stamp with a different value: 2 on "):
        build_transitions(SPEC, {"state": twice, "command": commands([0, 10, 20])}, on_nonfinite="drop")


def test_duplicate_stamps_with_different_values_are_refused_or_their_ticks_dropped():
    s = states([0, 10, 20, 30, 40])
    s.stamps[2] = 10 * MS  # samples 1 and 2 share 10 ms: which held at ticks 10 and 20 is unknown
    with pytest.raises(AlignmentError, match=r"samples that share a stamp with a different value: 2 on "
                                             r"/boat/odom \(state\); .* pass --on-duplicate drop"):
        build_transitions(SPEC, {"state": s, "command": commands(np.arange(5) * 10)})
    arrays, report = build_transitions(SPEC, {"state": s, "command": commands(np.arange(5) * 10)},
                                       on_duplicate="drop")
    assert report.ambiguous_samples == {"state": 2}
    # tick 10 and tick 20 (holding the 10 ms sample) use an ambiguous sample: transitions
    # 0-10, 10-20 and 20-30 go; 30-40 stays
    assert report.dropped == {"duplicate-stamp next state": 1, "duplicate-stamp state": 2}
    assert report.transitions == 1 and not (arrays["observations"] == arrays["next_observations"]).all(axis=1).any()


# Boundaries of every comparison in the alignment (issue 32 item 2).

@pytest.mark.parametrize("age_ns, fresh", [(25 * MS - 1, True), (25 * MS, True), (25 * MS + 1, False)])
def test_a_sample_exactly_max_age_old_is_fresh_and_one_ns_older_is_not(age_ns, fresh):
    """Within an episode every state is fresh by construction (a longer silence cuts it), so
    the age limit bites on the command (its hold) and on signals read from topics."""
    assert bool(latest_at_or_before(np.array([0]), np.array([age_ns]), 25 * MS)[0] == 0) == fresh
    t = np.arange(6) * 10
    # the command of 40 ms - age is the latest before tick 40: transition 30 -> 40 uses it at
    # exactly `age_ns`; transition 40 -> 50 (35 ms or more) never has a command
    cmd = TimeSeries(np.array([0, 40 * MS - age_ns], dtype=np.int64), np.zeros((2, 2)))
    _, report = build_transitions(SPEC, {"state": states(t), "command": cmd})
    assert report.dropped == {"no command within hold": 1 if fresh else 2}
    spec = TaskSpec.from_dict(boat_dict(control_period=0.01, max_age=0.025, reward={
        "topic": "/boat/reward", "type": "std_msgs/msg/Float64", "field": "data"}), "boat")
    reward = TimeSeries(np.array([0, 30 * MS - age_ns], dtype=np.int64), np.ones((2, 1)))
    _, report = build_transitions(spec, {"state": states(t[:5]), "command": commands(t[:4]), "reward": reward})
    # ticks 0-20 hold fresh rewards whatever the age; tick 30 is at the boundary
    assert report.dropped == ({} if fresh else {"no reward within max_age": 1})


def test_a_command_stamped_exactly_at_the_next_tick_answers_that_tick_not_this_one():
    t = np.arange(3) * 10
    late = TimeSeries(np.array([10 * MS, 20 * MS - 1], dtype=np.int64), np.array([[0.5, 0.5], [0.7, 0.7]]))
    arrays, report = build_transitions(SPEC, {"state": states(t), "command": late})
    # tick 0 -> 10: the command at exactly 10 ms is not yet in force; tick 10 -> 20: the one 1 ns before 20 is
    assert report.dropped == {"no command within hold": 1}
    np.testing.assert_allclose(arrays["actions"][:, 0], [0.7], atol=1e-6)


@pytest.mark.parametrize("gap_ms, episodes", [(24, 1), (25, 1), (26, 2)])
def test_a_silence_of_exactly_max_age_does_not_cut_the_episode(gap_ms, episodes):
    np.testing.assert_array_equal(len(episode_bounds(np.array([0, 10, 10 + gap_ms]) * MS, 25 * MS)), episodes)
    t = np.array([0, 10, 10 + gap_ms, 20 + gap_ms])
    _, report = build_transitions(SPEC, {"state": states(t), "command": commands(np.arange(0, 50, 5))})
    assert report.episodes == episodes


def test_cost_is_one_only_for_a_strictly_positive_margin():
    spec = TaskSpec.from_dict(boat_dict(control_period=0.01, max_age=0.025, margin={
        "topic": "/boat/margin", "type": "std_msgs/msg/Float64", "field": "data"}), "boat")
    t = np.arange(4) * 10
    margin = series(t, [[-1.0], [0.0], [1e-9], [5.0]])
    arrays, _ = build_transitions(spec, {"state": states(t), "command": commands(t), "margin": margin})
    np.testing.assert_array_equal(arrays["costs"], [0, 0, 1])
    np.testing.assert_array_equal(arrays["margins"], np.float32([-1.0, 0.0, 1e-9]))


@pytest.mark.parametrize("back_ns, reordered", [(1, 1), (25 * MS, 1), (25 * MS + 1, None)])
def test_time_going_back_by_one_ns_is_sorted_by_exactly_max_age_too_and_further_is_refused(back_ns, reordered):
    """A sample stamped 1 ns before the latest earlier one is out of order (sorted, counted);
    up to max_age (25 ms) back it is sorted, beyond it the stream restarted and is refused."""
    s = states([0, 10, 20, 30, 40, 50])
    s.stamps[5] = 40 * MS - back_ns   # arrives after the 40 ms sample, stamped before it
    if reordered is None:
        with pytest.raises(AlignmentError, match="time goes backwards on /boat/odom"):
            build_transitions(SPEC, {"state": s, "command": commands(np.arange(0, 60, 10))})
        return
    _, report = build_transitions(SPEC, {"state": s, "command": commands(np.arange(0, 60, 10))})
    assert report.reordered_samples == {"state": reordered}


def test_sorting_keeps_the_arrival_order_of_equal_stamps():
    """Stable for equal stamps, also where numpy's default sort is not (more than 16 samples)."""
    stamps = np.array([1] * 40 + [0] * 40, dtype=np.int64)
    ordered = TimeSeries(stamps, np.arange(80.0)[:, None]).sorted()
    assert ordered.values[:, 0].tolist() == list(range(40, 80)) + list(range(40))


def test_reports_of_two_recordings_add_up_field_by_field():
    one = AlignmentReport(episodes=1, ticks=10, transitions=8, timeouts=1, dropped={"stale": 2},
                          nonfinite_samples={"state": 1}, clipped_actions=3, reordered_samples={"command": 2},
                          duplicate_samples={}, ambiguous_samples={"state": 4}, held_states={"state": 5})
    two = AlignmentReport(episodes=2, ticks=20, transitions=17, timeouts=2, dropped={"stale": 1, "gap": 7},
                          nonfinite_samples={}, clipped_actions=0, reordered_samples={"command": 1, "state": 6},
                          duplicate_samples={"state": 9}, ambiguous_samples={}, held_states={"state": 1})
    assert one.merge(two) == AlignmentReport(
        episodes=3, ticks=30, transitions=25, timeouts=3, dropped={"stale": 3, "gap": 7},
        nonfinite_samples={"state": 1}, clipped_actions=3, reordered_samples={"command": 3, "state": 6},
        duplicate_samples={"state": 9}, ambiguous_samples={"state": 4}, held_states={"state": 6})


@pytest.mark.parametrize("policy", ["on_nonfinite", "on_duplicate"])
def test_an_unknown_policy_is_named_with_the_choices(policy):
    with pytest.raises(AlignmentError, match=rf"^{policy} must be one of \(.*\), got 'keep'$"):
        build_transitions(SPEC, {"state": states([0, 10, 20]), "command": commands([0, 10])}, **{policy: "keep"})

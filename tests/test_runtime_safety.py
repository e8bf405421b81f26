"""The runtime's refusals at their boundaries: state ages, non-finite outputs, the trained
observation range, the threshold. Each case sits exactly at, just inside and just outside the
limit it tests, with a stop action that differs from the default (zeros)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import edited_bundle, override

from safefql_core.bundle import load_bundle
from safefql_core.decision import DecisionError
from safefql_core.runtime import MAX_TIMEOUT_PERIODS, Mode, Runtime, RuntimeConfig

STOP = [0.25, -0.5]
TIMEOUT = 0.1
TOLERANCE = 0.005
STATE = np.array([-2.0, 0.0])


@pytest.fixture(scope="module")
def runtime(bundle) -> Runtime:
    return Runtime(load_bundle(bundle), RuntimeConfig(state_timeout=TIMEOUT, future_tolerance=TOLERANCE,
                                                      **override(bundle, stop_action=STOP), period=0.02))


def below(x: float) -> float:
    return math.nextafter(x, -math.inf)


def above(x: float) -> float:
    return math.nextafter(x, math.inf)


def assert_stop(d, reason: str) -> None:
    assert d.mode is Mode.REJECTED, d
    assert d.action.tolist() == STOP
    assert reason in d.reason, d.reason


@pytest.mark.parametrize("clock", ["stamp", "receipt"])
@pytest.mark.parametrize("age", [0.0, TIMEOUT, below(TIMEOUT), -TOLERANCE, above(-TOLERANCE), 0.05])
def test_ages_within_the_limits_are_fresh(runtime, clock, age):
    d = runtime.decide(STATE, **{"age" if clock == "stamp" else "received_age": age})
    assert d.mode is not Mode.REJECTED, d.reason


@pytest.mark.parametrize("clock", ["stamp", "receipt"])
@pytest.mark.parametrize("age, reason", [
    (above(TIMEOUT), "state is stale"), (0.5, "state is stale"), (3600.0, "state is stale"),
    (below(-TOLERANCE), "in the future"), (-5.0, "in the future"), (-3600.0, "in the future"),
    (math.nan, "is nan"), (math.inf, "is inf"), (-math.inf, "is -inf"),
    ("0.0", "not a number of seconds"), (True, "not a number of seconds"),
])
def test_ages_outside_the_limits_send_the_stop(runtime, clock, age, reason):
    d = runtime.decide(STATE, **{"age" if clock == "stamp" else "received_age": age})
    assert_stop(d, reason)
    assert clock in d.reason or reason == "state is stale"


def test_a_fresh_stamp_does_not_hide_an_old_receipt(runtime):
    assert_stop(runtime.decide(STATE, 0.0, above(TIMEOUT)), "since receipt")
    assert_stop(runtime.decide(STATE, above(TIMEOUT), 0.0), "old")


def test_without_a_timeout_only_broken_ages_are_refused(bundle):
    rt = Runtime(load_bundle(bundle), RuntimeConfig(**override(bundle, stop_action=STOP), period=0.02))
    assert rt.decide(STATE, 3600.0, 3600.0).mode is not Mode.REJECTED
    assert_stop(rt.decide(STATE, -1.0), "in the future")
    assert_stop(rt.decide(STATE, math.nan), "is nan")


@pytest.mark.parametrize("obs, reason", [
    (["a", "b"], "not real numbers"), ({"x": 1.0}, "not real numbers"), ([[0.0], [0.0, 1.0]], "not an array"),
    (np.array([1 + 2j, 0]), "not real numbers"), (np.array([True, False]), "not real numbers"),
    ([0.0, 0.0, 0.0], "has 3 values"), ([], "has 0 values"), ([np.inf, 0.0], "non-finite values at indices [0]"),
])
def test_states_that_are_not_an_observation_send_the_stop(runtime, obs, reason):
    assert_stop(runtime.decide(obs, 0.0, 0.0), reason)


def test_a_non_finite_network_output_sends_the_stop(bundle):
    """3e38 is a finite float32 that overflows the first layer: the graphs return NaN, which
    fails every comparison of the decision without raising (reached with the range check on
    'warn', which lets such a state through)."""
    rt = Runtime(load_bundle(bundle), RuntimeConfig(**override(bundle, stop_action=STOP), out_of_range="warn"))
    d = rt.decide(np.array([3e38, 3e38], np.float32))
    assert_stop(d, "the networks' output is non-finite")
    assert not math.isfinite(d.q_safe)


def test_export_and_load_refuse_non_finite_example_outputs(bundle, tmp_path):
    import json
    import shutil

    import torch

    from safefql_core.bundle import BundleError
    from safefql_core.bundle_export import export_bundle
    from safefql_core.pipeline.export import task_description
    from safefql_core.training import load_run

    learner, meta = load_run(Path(bundle).parent / "run")
    with torch.no_grad():
        next(learner.qc.parameters()).fill_(float("nan"))
    obs = np.zeros((16, 2), np.float32)
    with pytest.raises(BundleError, match="example outputs are not finite"):
        export_bundle(learner, meta, tmp_path / "nan_bundle", obs, None, task_description(meta),
                      load_bundle(bundle).decision)
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    doc = json.loads((copy / "bundle.json").read_text())
    doc["examples"]["safety"]["outputs"][0][0] = float("nan")  # json writes NaN
    (copy / "bundle.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="example outputs are not finite"):
        load_bundle(copy)


@pytest.mark.parametrize("delta", [math.inf, math.nan, -1e9, 1e9, "0.1", None, True])
def test_an_implausible_calibrated_threshold_is_refused(bundle, tmp_path, delta):
    from safefql_core.bundle import BundleError
    lo, hi = load_bundle(bundle).threshold_range
    copy = edited_bundle(bundle, tmp_path, lambda d: d.update(calibration={"delta": delta}))
    with pytest.raises(BundleError, match=rf"calibration δ\* = .* is not a threshold in \[{lo:.4g}, {hi:.4g}\].*; "
                                          r"recalibrate with offline_train.calibrate and re-export$"):
        load_bundle(copy)


@pytest.mark.parametrize("end", [0, 1])
def test_the_threshold_range_is_closed(bundle, tmp_path, end):
    from safefql_core.bundle import BundleError
    edge = load_bundle(bundle).threshold_range[end]
    inside = edited_bundle(bundle, tmp_path, lambda d: d.update(calibration={"delta": edge}))
    assert load_bundle(inside, check=False).threshold == edge
    outside = math.nextafter(edge, math.inf if end else -math.inf)
    with pytest.raises(BundleError, match="is not a threshold"):
        _check = edited_bundle(bundle, tmp_path / "out", lambda d: d.update(calibration={"delta": outside}))
        load_bundle(_check, check=False)


def test_the_threshold_range_is_the_margin_range_widened_for_calibration(bundle):
    b = load_bundle(bundle)
    lo, hi = b.meta["margin_range"]
    assert lo < 0 < hi   # the tiny boat data has safe and unsafe states
    assert b.threshold_range == (lo - (hi - lo), hi)


@pytest.mark.parametrize("field, value, message", [
    ("threshold", math.inf, "is not a threshold"), ("threshold", math.nan, "is not a threshold"),
    ("threshold", "0", "is not a threshold"),
    ("state_timeout", math.nan, "state_timeout must be"), ("state_timeout", 0.0, "state_timeout must be"),
    ("state_timeout", -0.1, "state_timeout must be"), ("state_timeout", math.inf, "state_timeout must be"),
    ("state_timeout", above(10 * 0.02), r"at most 10 decision periods \(0.2 s\)"),
    ("future_tolerance", -1e-9, "future_tolerance must be"), ("future_tolerance", math.nan, "future_tolerance"),
    ("period", 0.0, "period must be"), ("period", -0.005, "period must be"),
    ("threads", 0, "threads must be an integer >= 1"), ("seed", -1, "seed must be"),
])
def test_runtime_config_outside_its_range_is_refused(bundle, field, value, message):
    with pytest.raises(ValueError, match=message):
        Runtime(load_bundle(bundle), RuntimeConfig(**{"period": 0.02, field: value}))


@pytest.mark.parametrize("field, value, message", [
    ("candidates", -1, "candidates must be"), ("candidates", 2.5, "candidates must be"),
    ("proposals", 0, "proposals must be"), ("noise", "gaussian", "noise must be"),
    ("fallback_actions", [[2.0, 0.0]], r"fallback_actions must be finite actions in \[-1, 1\]"),
    ("stop_action", [0.0, 0.0, 0.0], "stop_action must be"),
])
def test_decision_settings_outside_their_range_are_refused(bundle, field, value, message):
    with pytest.raises(DecisionError, match=message):
        load_bundle(bundle).decision.with_changes(**{field: value})


def test_the_longest_state_timeout_is_accepted(bundle):
    rt = Runtime(load_bundle(bundle), RuntimeConfig(period=0.02, state_timeout=0.2, future_tolerance=0.2))
    assert rt.cfg.state_timeout == 0.2


def test_q_safe_exactly_at_the_threshold_is_not_certified(bundle):
    b = load_bundle(bundle)
    alone = override(b, candidates=0, fallback_actions=[])  # the proposal is the only candidate
    q = Runtime(b, RuntimeConfig(**alone, threshold=b.threshold_range[1])).decide(STATE).q_safe  # the proposal's
    at = Runtime(b, RuntimeConfig(threshold=q, **override(b, candidates=0, fallback_actions=[],
                                                         stop_action=STOP))).decide(STATE)
    assert at.mode is Mode.UNSAFE and at.q_safe == q and at.margin == 0.0
    just_above = Runtime(b, RuntimeConfig(threshold=math.nextafter(q, math.inf), **alone)).decide(STATE)
    assert just_above.mode is Mode.NOMINAL and just_above.q_safe == q


def test_the_bundle_records_the_trained_observation_range_widened(bundle, tiny_boat_h5):
    from safefql_core.bundle_export import OBS_RANGE_MARGIN
    from safefql_core.data import load_dataset
    obs = load_dataset(tiny_boat_h5).observations
    lo, hi = obs.min(axis=0).astype(np.float64), obs.max(axis=0).astype(np.float64)
    box = load_bundle(bundle).meta["observation_range"]
    assert box["trained_min"] == lo.tolist() and box["trained_max"] == hi.tolist()
    np.testing.assert_allclose(box["low"], lo - OBS_RANGE_MARGIN * (hi - lo), rtol=1e-6)
    np.testing.assert_allclose(box["high"], hi + OBS_RANGE_MARGIN * (hi - lo), rtol=1e-6)
    card = (Path(bundle) / "MODEL_CARD.md").read_text()
    assert f"[{box['low'][0]:.4g}, {box['high'][0]:.4g}] × [{box['low'][1]:.4g}, {box['high'][1]:.4g}]" in card


@pytest.mark.parametrize("end", [0, 1])
def test_states_outside_the_trained_range_send_the_stop(runtime, bundle, end):
    box = load_bundle(bundle).meta["observation_range"]
    edge = np.array([box["low"][0], box["low"][1]] if end == 0 else [box["high"][0], box["high"][1]], np.float32)
    assert runtime.decide(edge, 0.0, 0.0).mode is not Mode.REJECTED
    beyond = edge.copy()
    beyond[1] = np.nextafter(edge[1], np.float32(np.inf if end else -np.inf))
    assert_stop(runtime.decide(beyond, 0.0, 0.0), "outside the trained observation range at indices [1]")
    assert_stop(runtime.decide(np.array([1e30, 0.0]), 0.0, 0.0), "at indices [0]")


def test_out_of_range_warn_decides_and_says_so(bundle):
    rt = Runtime(load_bundle(bundle), RuntimeConfig(**override(bundle, stop_action=STOP), out_of_range="warn"))
    d = rt.decide(np.array([100.0, 0.0]))
    assert d.mode is not Mode.REJECTED and np.isfinite(d.action).all()
    assert "warning: state is outside the trained observation range at indices [0]" in d.reason
    with pytest.raises(ValueError, match="out_of_range must be 'reject' or 'warn'"):
        Runtime(load_bundle(bundle), RuntimeConfig(out_of_range="ignore"))


def _sha(path: str) -> str:
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(files={}), "'files' lists \\[\\]; a safefql bundle has exactly"),
    (lambda d: d["files"].pop("weights.pt"), "a safefql bundle has exactly"),
    (lambda d: d["files"].update({"/etc/passwd": _sha("/etc/passwd")}), "not plain file names"),
    (lambda d: d["files"].update({"../bundle.json": "0" * 64}), "not plain file names"),
    (lambda d: d["files"].update({"extra.onnx": "0" * 64}), "a safefql bundle has exactly"),
    (lambda d: d["files"].update({"actor.onnx": 5}), "sha256 hex digest"),
    (lambda d: d["graphs"].pop("proposals"), "'graphs' lists"),
    (lambda d: d["examples"].pop("safety"), "'examples' lists"),
    (lambda d: d.update(algo="bc"), "algorithm 'bc' has no deployable bundle"),
])
def test_the_file_list_is_exactly_the_bundles_own(bundle, tmp_path, edit, message):
    from safefql_core.bundle import BundleError
    with pytest.raises(BundleError, match=message):
        load_bundle(edited_bundle(bundle, tmp_path, edit))


@pytest.mark.parametrize("task, message", [
    ({"control_period": -0.005}, "control_period must be a positive number of seconds, got -0.005"),
    ({"control_period": 0}, "control_period must be a positive"), ({"control_period": "fast"}, "control_period"),
    ({"action_repeat": 0}, "action_repeat must be an integer >= 1, got 0"), ({"action_repeat": 1.5}, "action_repeat"),
])
def test_a_bundle_with_an_impossible_period_is_refused(bundle, tmp_path, task, message):
    from safefql_core.bundle import BundleError
    with pytest.raises(BundleError, match=message):
        load_bundle(edited_bundle(bundle, tmp_path, lambda d: d["task"].update(task)), check=False)


def test_loading_and_running_a_bundle_imports_no_torch(bundle):
    """What a robot runs (the controller node, the runtime, a verified bundle) needs no torch:
    it costs ~2.5 s and ~190 MB at start-up (docs/BENCHMARKS.md, "Torch-free bundle loading").
    Nor any of the benchmark environments (safefql_core.envs: simulators, behaviour policies,
    their gymnasium and IR-SIM), which stay out of what a deployment loads (docs/DESIGN.md,
    "Structure")."""
    import subprocess
    import sys
    code = ("import sys\n"
            "import safefql_ros.controller\n"
            "from safefql_core.runtime import load_runtime\n"
            "d = load_runtime(sys.argv[1]).decide([-2.0, 0.0])\n"
            "assert d.mode.value != 'REJECTED', d\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))\n"
            "print(sorted(m for m in sys.modules if m.startswith('safefql_core.envs')\n"
            "             or m.split('.')[0] in ('gymnasium', 'safety_gymnasium', 'irsim', 'mujoco')))\n")
    proc = subprocess.run([sys.executable, "-c", code, bundle], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    torch_modules, env_modules = proc.stdout.strip().splitlines()[-2:]
    assert torch_modules == "[]"
    assert env_modules == "[]"


def test_a_modified_weights_file_is_refused(bundle, tmp_path):
    """weights.pt feeds only the torch debug backend, and is checked all the same."""
    from safefql_core.bundle import BundleError
    copy = edited_bundle(bundle, tmp_path, lambda d: None)
    raw = bytearray((copy / "weights.pt").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (copy / "weights.pt").write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="checksum of weights.pt"):
        load_bundle(copy)


def _nudge_last(doc, graph: str, output: int) -> None:
    """Move the last stored value of one output of one graph's examples by 1e-2."""
    values = doc["examples"][graph]["outputs"][output]
    if isinstance(values[-1], list):
        values[-1][0] += 1e-2
    else:
        values[-1] += 1e-2


@pytest.mark.parametrize("graph, output", [("safety", 1), ("policy", 2), ("policy", 0)])
def test_every_output_of_every_example_is_checked(bundle, tmp_path, graph, output):
    from safefql_core.bundle import BundleError
    with pytest.raises(BundleError, match=f"{graph}.onnx: onnxruntime output differs"):
        load_bundle(edited_bundle(bundle, tmp_path, lambda d: _nudge_last(d, graph, output)))


def test_combined_age_judges_each_input_against_its_own_limit():
    """Two inputs, the second allowed 50 ms more than state_timeout: the combined age exceeds the
    timeout exactly when one input exceeds its own limit, an input from the future beyond the
    tolerance makes the state from the future, and a fresh input with a positive allowance never
    reads as being from the future."""
    from safefql_core.runtime import combined_age
    allow = [0.0, 0.05]
    assert combined_age([0.10, 0.14], allow, 0.005) == pytest.approx(0.10)
    assert combined_age([0.01, 0.20], allow, 0.005) == pytest.approx(0.15)
    assert combined_age([0.0, 0.0], allow, 0.005) == 0.0
    assert combined_age([-0.001, 0.0], allow, 0.005) == 0.0
    assert combined_age([0.3, -0.5], allow, 0.005) == -0.5
    assert math.isnan(combined_age([0.0, math.nan], allow, 0.005))


def test_the_state_timeout_changes_within_the_bounds_of_construction(bundle):
    """10 decision periods (0.2 s at 0.02 s) is the longest timeout; the old value comes back."""
    cfg = RuntimeConfig(state_timeout=TIMEOUT, **override(bundle, stop_action=STOP), period=0.02)
    rt = Runtime(load_bundle(bundle), cfg)
    assert rt.set_state_timeout(0.2) == TIMEOUT and rt.cfg.state_timeout == 0.2
    assert rt.set_state_timeout(0.05) == 0.2
    assert_stop(rt.decide(STATE, age=above(0.05)), "stale")
    for value in (above(0.2), 0.0, -0.01, math.nan, math.inf):
        with pytest.raises(ValueError, match="state_timeout"):
            rt.set_state_timeout(value)
    assert rt.cfg.state_timeout == 0.05


def test_load_runtime_wraps_the_verified_bundle_with_the_given_config(bundle):
    from safefql_core.runtime import load_runtime
    cfg = RuntimeConfig(state_timeout=TIMEOUT, **override(bundle, stop_action=STOP), period=0.02)
    rt = load_runtime(bundle, cfg)
    assert rt.cfg is cfg and rt.bundle.path == Path(bundle)
    assert_stop(rt.decide(STATE, age=above(TIMEOUT)), "stale")


def test_the_bundle_deploys_with_its_recorded_spec_or_a_matching_given_one(bundle):
    from safefql_core.tasks import TaskSpec
    b = load_bundle(bundle)
    spec = b.task_spec()
    assert (spec.obs_dim, spec.act_dim) == (b.obs_dim, b.act_dim) == (2, 2) and spec.name == "boat"
    given = TaskSpec.from_dict(spec.to_dict(), "boat")
    assert b.task_spec(given, "the node's spec") is given


@pytest.mark.parametrize("key, value, kind", [("obs_dim", "2", "integer"), ("algo", 1, "string"),
                                              ("graphs", [], "object"), ("margin_range", {}, "array")])
def test_a_bundle_json_entry_of_the_wrong_type_is_named_with_the_type_it_needs(bundle, tmp_path, key, value, kind):
    from safefql_core.bundle import BundleError
    edited = edited_bundle(bundle, tmp_path, lambda doc: doc.update({key: value}))
    with pytest.raises(BundleError, match=f"'{key}' must be a JSON {kind}, got "):
        load_bundle(edited)


def test_stored_examples_with_fewer_outputs_than_the_graph_are_refused(bundle, tmp_path):
    from safefql_core.bundle import BundleError
    edited = edited_bundle(bundle, tmp_path, lambda doc: doc["examples"]["safety"]["outputs"].pop())
    with pytest.raises(BundleError, match=r"safety.onnx: the graph has 2 outputs, the stored examples 1; re-export"):
        load_bundle(edited)


def test_a_future_age_exactly_at_the_tolerance_is_still_fresh():
    """The tolerance is inclusive, for several inputs as for one (`decide`'s own check)."""
    from safefql_core.runtime import combined_age
    assert combined_age([-0.005, 0.0], [0.0, 0.0], 0.005) == 0.0
    assert combined_age([below(-0.005), 0.0], [0.0, 0.0], 0.005) == below(-0.005)


def test_score_takes_python_lists_and_float64_actions(runtime):
    """`score` is the entry point for callers with their own arrays (replay, tests): the ONNX
    graphs take float32 only, so it converts whatever real actions it is given."""
    o = runtime.validate(STATE, None)[0]
    actions = [[0.25, -0.5], [1.0, 0.0], [0.0, 0.0]]
    q, v = runtime.score(o, actions)
    q32, v32 = runtime.score(o, np.asarray(actions, dtype=np.float32))
    assert q.shape == (3,) and np.array_equal(q, q32) and np.array_equal(v, v32)


@pytest.mark.parametrize("noise", ["zero", "sample"])
def test_the_first_proposal_is_the_actors_own_action_unless_noise_is_sampled(bundle, noise):
    """With noise 'zero' the proposals are the actor's z = 0 action plus N − 1 sampled ones, so
    ranking can only improve on the raw actor; with 'sample' every proposal is sampled."""
    b = load_bundle(bundle)
    rt = Runtime(b, RuntimeConfig(**override(b, proposals=4, noise=noise)))
    rt.decide(STATE)
    drawn = rt._proposals.inputs["noise"]
    assert drawn.shape == (4, 2) and (drawn[1:] != 0.0).all()
    assert (drawn[0] == 0.0).all() if noise == "zero" else (drawn[0] != 0.0).all()


def test_a_proposal_exactly_at_the_threshold_is_not_certified(bundle):
    """Among several proposals, as for one, Q_safe == δ* is not below δ*: with δ* at the Q_safe
    of the proposal the reward critic likes best, that proposal is vetoed and a lower one sent."""
    b = load_bundle(bundle)
    alone = override(b, proposals=8, candidates=0, fallback_actions=[], stop_action=STOP)
    first = Runtime(b, RuntimeConfig(**alone, threshold=b.threshold_range[1], seed=3))
    first.decide(STATE)
    action, q_reward, q_safe, _ = (out.copy() for out in first._proposals.run())  # the same eight again
    best = int(np.argmax(q_reward))
    assert q_safe[best] > q_safe.min(), "the reward critic's favourite is the safest: pick another seed"
    at = Runtime(b, RuntimeConfig(**alone, threshold=float(q_safe[best]), seed=3)).decide(STATE)
    below_best = q_safe < q_safe[best]
    chosen = int(np.argmax(np.where(below_best, q_reward, -np.inf)))
    assert at.mode is Mode.NOMINAL and at.q_safe == float(q_safe[chosen]) < at.threshold
    np.testing.assert_array_equal(at.action, action[chosen])


def test_untrusted_ages_are_reported_in_milliseconds(runtime):
    """The stop's reason gives the age and the limit it broke in ms (what a person reads in
    /diagnostics), for a state from the future and for a stale one."""
    future = runtime.decide(STATE, age=-0.5)
    assert f"lies {0.5 * 1000:.1f} ms in the future (tolerance {TOLERANCE * 1000:.1f} ms)" in future.reason
    stale = runtime.decide(STATE, age=0.25)
    assert f"state is stale: {0.25 * 1000:.1f} ms old > state_timeout {TIMEOUT * 1000:.1f} ms" in stale.reason


def test_a_stop_carries_the_threshold_no_safety_value_and_its_own_time(runtime):
    import time
    start = time.perf_counter()
    d = runtime.decide(STATE, age=1.0)
    elapsed_ms = (time.perf_counter() - start) * 1e3
    assert d.mode is Mode.REJECTED and d.threshold == runtime.threshold
    assert math.isnan(d.q_safe) and math.isnan(d.v_safe)
    assert 0.0 <= d.inference_ms <= elapsed_ms


def test_one_sampled_proposal_draws_a_fresh_noise_per_dimension_each_tick(bundle):
    b = load_bundle(bundle)
    rt = Runtime(b, RuntimeConfig(**override(b, proposals=1, noise="sample")))
    draws = []
    for _ in range(2):
        rt.decide(STATE)
        draws.append(rt._policy.inputs["noise"].copy())
    assert all(d.shape == (1, 2) and np.isfinite(d).all() and d[0, 0] != d[0, 1] for d in draws)
    assert (draws[0] != draws[1]).all()


def test_two_proposals_are_ranked(bundle):
    """proposals = 2 already goes through the ranking graph (its second row sampled)."""
    b = load_bundle(bundle)
    rt = Runtime(b, RuntimeConfig(**override(b, proposals=2)))
    rt.decide(STATE)
    assert (rt._proposals.inputs["noise"][1] != 0.0).all()


def test_extra_policy_samples_are_distinct(bundle):
    """When the proposal is not certified the search widens with `candidates` samples of the
    policy, each with its own noise in every dimension."""
    b = load_bundle(bundle)
    rt = Runtime(b, RuntimeConfig(**override(b, candidates=4), threshold=b.threshold_range[0]))
    rt.decide(STATE)
    noise = rt._candidates.inputs["noise"]
    assert noise.shape == (4, 2) and len(np.unique(noise)) == noise.size


@pytest.mark.parametrize("certified", [True, False])
def test_a_range_warning_is_the_reason_or_follows_it(bundle, certified):
    """out_of_range 'warn': a certified action's reason is the warning alone; an uncertified
    one's says first why it was replaced, then the warning."""
    b = load_bundle(bundle)
    threshold = b.threshold_range[1] if certified else b.threshold_range[0]
    rt = Runtime(b, RuntimeConfig(**override(b, stop_action=STOP), out_of_range="warn", threshold=threshold))
    # outside the range in x; the first of these the lowest δ* does not certify (a real case)
    decisions = [rt.decide(np.array([x, 0.0])) for x in (100.0, -100.0, 30.0, -30.0, 12.0, -12.0)]
    d = next((d for d in decisions if d.mode is not Mode.NOMINAL), decisions[0])
    warning = "warning: state is outside the trained observation range at indices [0]"
    if certified:
        assert d.mode is Mode.NOMINAL and d.reason.startswith(warning), d.reason
    else:
        assert d.mode in (Mode.INTERVENE, Mode.UNSAFE) and not d.reason.startswith(warning)
        assert f"; {warning}" in d.reason


@pytest.mark.parametrize("action, q, v", [([math.nan, 0.0], -1.0, 0.5), ([0.5, 0.0], -1.0, math.nan),
                                          ([0.5, 0.0], math.nan, 0.5)])
def test_any_one_non_finite_output_sends_the_stop_with_the_values(bundle, action, q, v):
    """Each output on its own (action, Q_safe, V_safe) is checked: a fault that leaves the others
    finite still stops, and the stop reports the values the networks gave."""
    import time
    b = load_bundle(bundle)
    rt = Runtime(b, RuntimeConfig(**override(b, stop_action=STOP), threshold=b.threshold_range[1]))
    rt.propose = lambda o: (np.array(action, np.float32), q, v)  # the fault, injected after the graphs
    rt.safest_candidate = lambda o, a, q_, v_: (a, q_, v_)
    start = time.perf_counter()
    d = rt.decide(STATE)
    elapsed_ms = (time.perf_counter() - start) * 1e3
    assert_stop(d, "the networks' output is non-finite")
    np.testing.assert_array_equal([d.q_safe, d.v_safe], [q, v])  # NaN where the fault put it
    assert 0.0 <= d.inference_ms <= elapsed_ms


def test_a_decision_reports_its_own_time(runtime):
    import time
    start = time.perf_counter()
    d = runtime.decide(STATE)
    elapsed_ms = (time.perf_counter() - start) * 1e3
    assert d.mode is not Mode.REJECTED and 0.0 <= d.inference_ms <= elapsed_ms


@pytest.mark.parametrize("proposals, replaced", [(1, "actor action"), (2, "every actor proposal")])
def test_an_intervention_names_what_it_replaced(bundle, proposals, replaced):
    """With δ* exactly at the proposal's Q_safe the proposal is vetoed and a fallback sent; the
    reason says whether one action or all N proposals were over δ*."""
    b = load_bundle(bundle)
    settings = override(b, proposals=proposals, stop_action=STOP)
    q = Runtime(b, RuntimeConfig(**settings, threshold=b.threshold_range[1])).decide(STATE).q_safe
    d = Runtime(b, RuntimeConfig(**settings, threshold=q)).decide(STATE)
    assert d.mode is Mode.INTERVENE and d.reason.startswith(f"{replaced} had Q_safe above δ*="), d.reason


def test_future_tolerance_may_be_zero_but_state_timeout_may_not(bundle):
    b = load_bundle(bundle)
    assert Runtime(b, RuntimeConfig(period=0.02, future_tolerance=0.0)).cfg.future_tolerance == 0.0
    with pytest.raises(ValueError, match="future_tolerance must be a number of seconds >= 0 and at most"):
        Runtime(b, RuntimeConfig(period=0.02, future_tolerance=-0.001))
    with pytest.raises(ValueError, match="state_timeout must be a number of seconds > 0 and at most"):
        Runtime(b, RuntimeConfig(period=0.02, state_timeout=0.0))


def test_the_sessions_run_with_the_configured_threads(bundle):
    rt = Runtime(load_bundle(bundle), RuntimeConfig(threads=2))
    assert {s.get_session_options().intra_op_num_threads for s in rt.graphs.sessions.values()} == {2}


@pytest.mark.parametrize("name", ["..weights.pt", "graphs\\actor.onnx", ""])
def test_file_names_with_parent_or_windows_separators_or_none_are_refused(bundle, tmp_path, name):
    from safefql_core.bundle import BundleError
    with pytest.raises(BundleError, match="not plain file names"):
        load_bundle(edited_bundle(bundle, tmp_path, lambda d: d["files"].update({name: "0" * 64})))


@pytest.mark.parametrize("margin", [[1.0, 0.0], [0.0, math.inf], [0.0]])
def test_a_margin_range_that_is_not_min_max_is_refused_naming_the_file(bundle, tmp_path, margin):
    from safefql_core.bundle import BundleError
    edited = edited_bundle(bundle, tmp_path, lambda d: d.update(margin_range=margin))
    with pytest.raises(BundleError) as error:
        load_bundle(edited)
    assert str(error.value).startswith(f"{edited / 'bundle.json'}: 'margin_range' must be [min, max] of finite")


def test_a_bundle_json_that_is_not_an_object_is_named(bundle, tmp_path):
    import shutil

    from safefql_core.bundle import BundleError
    copy = tmp_path / "listed"
    shutil.copytree(bundle, copy)
    (copy / "bundle.json").write_text("[]")
    with pytest.raises(BundleError, match=f"^{copy / 'bundle.json'} holds a JSON list, not an object; re-export"):
        load_bundle(copy)


@pytest.mark.parametrize("as_path", [True, False])
def test_a_file_onnxruntime_cannot_load_is_named_with_the_fix(tmp_path, as_path):
    from safefql_core.bundle import BundleError, ort_session
    broken = tmp_path / "actor.onnx"
    broken.write_bytes(b"not a graph")
    where = str(broken) if as_path else "the exported graph"
    with pytest.raises(BundleError, match=f"^{where} is not an ONNX graph onnxruntime can load .*re-export the bundle"):
        ort_session(str(broken) if as_path else broken.read_bytes())


def test_stored_examples_that_do_not_fit_the_graph_are_named(bundle, tmp_path):
    from safefql_core.bundle import BundleError
    edited = edited_bundle(bundle, tmp_path, lambda doc: doc["examples"]["safety"]["inputs"].update(
        observation=[[1.0, 2.0, 3.0]]))
    with pytest.raises(BundleError, match=rf"(?s)^{edited}/safety.onnx: the stored examples in bundle.json do not fit "
                                          r"the graph \(.*\); re-export the bundle$"):
        load_bundle(edited)



# ---- what the mutation run found untested (docs/notebook/mutation.md) ---------------------------
def test_the_torch_backend_runs_torch_and_onnxruntime_runs_onnxruntime(bundle):
    """The two backends give the same numbers (test_bundle_runtime), so only the type tells
    whether the torch one was built at all."""
    b = load_bundle(bundle)
    assert type(Runtime(b, RuntimeConfig(backend="torch")).graphs).__name__ == "TorchGraphs"
    assert type(Runtime(b, RuntimeConfig()).graphs).__name__ == "OrtGraphs"


def test_every_decision_sends_float32(bundle):
    b = load_bundle(bundle)
    settings = override(b, stop_action=STOP, fallback_actions=[[0.5, 0.5]])
    q = Runtime(b, RuntimeConfig(**settings, threshold=b.threshold_range[1])).decide(STATE).q_safe
    decisions = [Runtime(b, RuntimeConfig(**settings, threshold=threshold)).decide(state)
                 for threshold, state in ((None, STATE), (q, STATE), (b.threshold_range[0], STATE), (None, None))]
    assert [d.mode for d in decisions] == [Mode.NOMINAL, Mode.INTERVENE, Mode.UNSAFE, Mode.REJECTED]
    assert {d.action.dtype for d in decisions} == {np.dtype(np.float32)}


@pytest.mark.parametrize("state, age", [(STATE, None), (None, None)])
def test_the_decision_time_is_in_milliseconds(bundle, monkeypatch, state, age):
    """perf_counter advances 2.5 ms per call here, so a decision and a stop each report 2.5."""
    import safefql_core.runtime as runtime_module
    rt = Runtime(load_bundle(bundle), RuntimeConfig())
    ticks = iter(np.arange(100.0, 101.0, 0.0025))
    monkeypatch.setattr(runtime_module.time, "perf_counter", lambda: float(next(ticks)))
    assert rt.decide(state, age).inference_ms == pytest.approx(2.5)


def test_a_nominal_decision_of_an_in_range_state_gives_no_reason(runtime):
    d = runtime.decide(STATE, age=0.0)
    assert d.mode is Mode.NOMINAL and d.reason == ""


def test_the_reasons_name_what_was_missing_or_late(bundle):
    rt = Runtime(load_bundle(bundle), RuntimeConfig(period=0.1, future_tolerance=0.1, state_timeout=0.2))
    assert rt.decide(None).reason == "no state received yet"
    assert rt.decide(STATE, 0.0, 0.3).reason == "state is stale: 300.0 ms since receipt > state_timeout 200.0 ms"
    assert rt.decide(STATE, 0.3, 0.0).reason == "state is stale: 300.0 ms old > state_timeout 200.0 ms"
    assert rt.decide(STATE, 0.0, math.nan).reason == "state age by its receipt is nan: the clock or the stamp is broken"
    assert rt.decide(STATE, -0.5).reason.endswith("(tolerance 100.0 ms): the sender's clock is ahead of the node's")


@pytest.mark.parametrize("field, value, message", [
    ("threads", True, "threads must be an integer >= 1, got True"),
    ("seed", False, "seed must be an integer >= 0, got False"),
    ("period", math.inf, "period must be a positive number of seconds, got inf"),
])
def test_a_bool_or_an_infinite_period_is_not_a_setting(bundle, field, value, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        Runtime(load_bundle(bundle), RuntimeConfig(**{field: value}))


def test_without_a_period_of_its_own_the_timeout_is_bounded_by_the_bundles(bundle, tmp_path):
    b = load_bundle(edited_bundle(bundle, tmp_path, lambda d: d["task"].update(control_period=0.01)))
    rt = Runtime(b, RuntimeConfig())
    assert rt.timeout_limit == pytest.approx(b.decision_period * MAX_TIMEOUT_PERIODS)
    with pytest.raises(ValueError, match="^state_timeout must be a number of seconds > 0 and at most"):
        rt.set_state_timeout(rt.timeout_limit * 2)


def test_without_any_period_the_timeout_is_unbounded(bundle, tmp_path):
    """A bundle from a dataset without a control period, run without one: no period to bound
    state_timeout by, so any finite one is accepted."""
    b = load_bundle(edited_bundle(bundle, tmp_path, lambda d: d["task"].pop("control_period")))
    rt = Runtime(b, RuntimeConfig(state_timeout=3600.0))
    assert b.decision_period is None and rt.timeout_limit == math.inf
    assert rt.decide(STATE, age=3599.0).mode is not Mode.REJECTED


def test_an_out_of_range_threshold_names_the_setting_and_the_fix(bundle):
    from safefql_core.bundle import BundleError
    with pytest.raises(BundleError) as error:
        Runtime(load_bundle(bundle), RuntimeConfig(threshold=1e9))
    assert str(error.value).startswith(f"{bundle}: RuntimeConfig.threshold = 1000000000.0 is not a threshold")
    assert str(error.value).endswith("; pass a value in that range, or None for the bundle's δ*")


def test_another_decision_is_refused_with_the_fix(bundle):
    b = load_bundle(bundle)
    with pytest.raises(ValueError) as error:
        Runtime(b, RuntimeConfig(decision=b.decision.with_changes(candidates=b.decision.candidates + 1)))
    assert str(error.value).endswith(
        "The bundle's δ* certifies its own decision: recalibrate with these settings (offline_train.calibrate "
        "--proposals/--candidates/--noise) and re-export, or set override_decision to run them anyway")


def test_a_threshold_calibrated_on_another_decision_is_reported(bundle, tmp_path):
    b = load_bundle(bundle)
    certified = b.decision.with_changes(proposals=b.decision.proposals + 1)
    copy = edited_bundle(bundle, tmp_path, lambda d: d.update(calibration={"delta": 0.0,
                                                                          "decision": certified.to_dict()}))
    assert Runtime(load_bundle(copy)).warnings == [
        f"δ*=0 was calibrated on another decision ({certified.describe()}) than the one run, which differs in "
        "['proposals']: its certificate does not cover it"]
    legacy = edited_bundle(bundle, tmp_path, lambda d: d.update(calibration={"delta": 0.0}), name="legacy")
    (warning,) = Runtime(load_bundle(legacy)).warnings
    assert warning.endswith(", not the decision run; recalibrate (offline_train.calibrate) and re-export")


def test_a_state_timeout_change_out_of_bounds_names_the_setting(runtime):
    with pytest.raises(ValueError, match="^state_timeout must be"):
        runtime.set_state_timeout(-1.0)

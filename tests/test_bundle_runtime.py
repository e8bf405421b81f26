"""Policy bundle export/load checks and every path of the per-tick runtime decision."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import edited_bundle, override, pipeline_artefact

from offline_train import export as export_cli
from safefql_core.bundle import LEGACY_CERTIFIES, BundleError, load_bundle
from safefql_core.decision import DecisionSettings
from safefql_core.runtime import Mode, Runtime, RuntimeConfig
from safefql_core.training import TrainOptions, train

TINY = {"safefql": {"critic_hidden": [32, 32], "flow_hidden": [32, 32], "batch_size": 64, "flow_steps": 3},
        "fisor": {"critic_hidden": [32, 32], "denoiser_hidden": [32, 32], "batch_size": 64}}


@pytest.fixture(scope="module", params=["safefql", "fisor"])
def bundle_dir(request, tiny_boat_h5, tmp_path_factory):
    def build(root: Path) -> None:  # the run beside its bundle, as the conftest's `bundle`
        train(TrainOptions(data=tiny_boat_h5, out=str(root / "run"), algo=request.param,
                           overrides={**TINY[request.param], "steps": 20}, progress=False))
        assert export_cli.main(["--run", str(root / "run"), "--out", str(root / "bundle")]) == 0
    return Path(pipeline_artefact(tmp_path_factory, f"{request.param}_bundle", build)) / "bundle"


def _copy(bundle_dir, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(bundle_dir, dst)
    return dst


def test_bundle_contents_and_parity(bundle_dir):
    b = load_bundle(bundle_dir)
    meta = b.meta
    assert meta["schema_version"] == 3 and meta["obs_dim"] == 2 and meta["act_dim"] == 2
    assert meta["task"]["name"] == "boat" and meta["calibration"] is None
    assert max(meta["export_parity_max_rel_diff"].values()) <= 1e-5
    assert (bundle_dir / "MODEL_CARD.md").read_text().startswith("# Model card")
    assert b.threshold == 0.0


def test_the_bundle_records_its_decision(bundle_dir):
    """An uncalibrated export deploys the task's default decision and says so in bundle.json;
    the runtime runs it without being told any setting."""
    b = load_bundle(bundle_dir)
    assert b.meta["decision"] == DecisionSettings.for_task("boat", 2).to_dict()
    assert len(b.decision.fallback_actions) == 8 and b.decision.candidates == 8 and b.decision.proposals == 1
    rt = Runtime(b)
    assert rt.decision == b.decision and rt.warnings == []
    np.testing.assert_array_equal(rt.fallbacks, np.array(b.meta["decision"]["fallback_actions"], np.float32))


def test_a_schema_2_bundle_loads_with_the_decision_it_was_deployed_with(bundle_dir, tmp_path):
    """Schema 2 recorded no decision: the node and `evaluate` deployed it with the task's
    defaults, and its δ* was fitted to the raw z = 0 actor, which the runtime says."""
    b = _copy(bundle_dir, tmp_path)
    meta = json.loads((b / "bundle.json").read_text())
    del meta["decision"]
    meta.update(schema_version=2, calibration={"delta": -0.1, "epsilon": 0.05, "n": 10, "method": "beta",
                                               "source": "simulated policy rollouts", "coverage": 1.0})
    (b / "bundle.json").write_text(json.dumps(meta))
    old = load_bundle(b)
    assert old.decision == DecisionSettings.for_task("boat", 2) and old.certified_decision is None
    rt = Runtime(old)
    assert rt.decision == old.decision and rt.threshold == -0.1
    assert len(rt.warnings) == 1 and LEGACY_CERTIFIES in rt.warnings[0]
    (b / "bundle.json").write_text(json.dumps({**meta, "schema_version": 3}))  # schema 3 must record one
    with pytest.raises(BundleError, match="lacks 'decision'"):
        load_bundle(b)
    own = DecisionSettings.for_task("boat", 2).to_dict()
    for bad in ({**own, "stop_action": None}, {**own, "fallback_actions": [[1.0, 0.0], [2.0]]},
                {**own, "candidates": -1}, {k: v for k, v in own.items() if k != "noise"}):
        (b / "bundle.json").write_text(json.dumps({**meta, "schema_version": 3, "decision": bad}))
        with pytest.raises(BundleError, match="the decision settings are invalid"):
            load_bundle(b)


def test_another_decision_needs_the_override_and_is_reported(bundle_dir):
    bundle = load_bundle(bundle_dir)
    other = bundle.decision.with_changes(proposals=1, candidates=2, noise="sample")
    with pytest.raises(ValueError, match=r"differs from the bundle's in \['candidates', 'noise'\]"):
        Runtime(bundle, RuntimeConfig(decision=other))
    rt = Runtime(bundle, RuntimeConfig(decision=other, override_decision=True))
    assert rt.decision == other and rt.candidates == 2
    assert rt.warnings == [f"decision overridden (candidates, noise): {other.describe()}"]
    # the same settings as the bundle's need no override
    assert Runtime(bundle, RuntimeConfig(decision=bundle.decision.with_changes(candidates=8))).warnings == []


def test_tampered_file_is_refused(bundle_dir, tmp_path):
    b = _copy(bundle_dir, tmp_path)
    onnx = next(b.glob("*.onnx"))
    raw = bytearray(onnx.read_bytes())
    raw[-10] ^= 0xFF
    onnx.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=f"checksum of {onnx.name}"):
        load_bundle(b)


def test_missing_file_schema_and_json_errors(bundle_dir, tmp_path):
    b = _copy(bundle_dir, tmp_path)
    (b / "safety.onnx").unlink()
    with pytest.raises(BundleError, match="safety.onnx listed in bundle.json is missing"):
        load_bundle(b)
    meta = json.loads((bundle_dir / "bundle.json").read_text())
    (b / "bundle.json").write_text(json.dumps({**meta, "schema_version": 99}))
    with pytest.raises(BundleError, match="schema version 99"):
        load_bundle(b)
    (b / "bundle.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(b)
    with pytest.raises(BundleError, match="is not a policy bundle"):
        load_bundle(tmp_path / "nowhere")


def test_wrong_declared_size_is_refused(bundle_dir, tmp_path):
    b = _copy(bundle_dir, tmp_path)
    meta = json.loads((b / "bundle.json").read_text())
    (b / "bundle.json").write_text(json.dumps({**meta, "obs_dim": 3}))
    with pytest.raises(BundleError, match="'observation_range' needs 'low' <= 'high', 3 finite numbers each"):
        load_bundle(b)
    box = {k: v + v[:1] for k, v in meta["observation_range"].items() if k in ("low", "high")}
    (b / "bundle.json").write_text(json.dumps({**meta, "obs_dim": 3, "observation_range": box}))
    with pytest.raises(BundleError, match="declares 3"):   # the graphs were built for 2
        load_bundle(b)


def test_corrupt_examples_fail_parity(bundle_dir, tmp_path):
    b = _copy(bundle_dir, tmp_path)
    meta = json.loads((b / "bundle.json").read_text())
    out = meta["examples"]["safety"]["outputs"][0]
    out[0] += 1e-3
    (b / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="differs from the stored torch output"):
        load_bundle(b)


@pytest.mark.parametrize("obs, age, reason", [
    (None, None, "no state received yet"),
    ([0.0, np.nan], None, "non-finite values at indices \\[1\\]"),
    ([0.0, 0.0, 0.0], None, "has 3 values, the policy expects 2"),
    ([0.0, 0.0], 0.5, "stale: 500.0 ms old > state_timeout 40.0 ms"),
])
def test_untrusted_state_commands_stop(bundle_dir, obs, age, reason):
    rt = Runtime(load_bundle(bundle_dir), RuntimeConfig(state_timeout=0.04))
    d = rt.decide(None if obs is None else np.array(obs), age)
    assert d.mode is Mode.REJECTED
    assert d.action.tolist() == [0.0, 0.0]
    assert re.search(reason, d.reason)


def test_nominal_intervene_unsafe(bundle_dir):
    bundle = load_bundle(bundle_dir)
    grid = np.linspace(-1, 1, 11)
    fallbacks = np.array([[x, y] for x in grid for y in grid], np.float32)
    # find a state where some fallback is strictly safer than the policy's proposal; a fresh
    # runtime per state (same seed) so that a stochastic (FISOR) proposal repeats below
    for obs in np.random.default_rng(0).uniform([-3, -2], [2, 2], (50, 2)):
        probe = Runtime(bundle, RuntimeConfig(threshold=bundle.threshold_range[1]))
        nominal = probe.decide(obs)
        q_fb = probe.score(probe.validate(obs, None)[0], fallbacks)[0]
        if q_fb.min() < nominal.q_safe - 1e-4:
            break
    else:
        pytest.fail("no state where a fallback beats the proposal")
    assert nominal.mode is Mode.NOMINAL and nominal.margin > 0
    between = float(nominal.q_safe + q_fb.min()) / 2
    rt = Runtime(bundle, RuntimeConfig(threshold=between, **override(bundle, fallback_actions=fallbacks, candidates=0)))
    d = rt.decide(obs)
    assert d.mode is Mode.INTERVENE and d.q_safe == pytest.approx(q_fb.min(), abs=1e-5) and d.margin > 0
    lowest = RuntimeConfig(threshold=bundle.threshold_range[0], **override(bundle, fallback_actions=fallbacks))
    unsafe = Runtime(bundle, lowest).decide(obs)
    assert unsafe.mode is Mode.UNSAFE and unsafe.q_safe <= q_fb.min() + 1e-6


def test_torch_backend_matches_onnxruntime(bundle_dir):
    bundle = load_bundle(bundle_dir)
    obs = np.array([0.3, -1.2])
    cfgs = [RuntimeConfig(backend=b, threshold=bundle.threshold_range[1], seed=3) for b in ("onnxruntime", "torch")]
    a, b = (Runtime(bundle, c).decide(obs) for c in cfgs)
    np.testing.assert_allclose(a.action, b.action, atol=1e-5)
    assert a.q_safe == pytest.approx(b.q_safe, abs=1e-5)


def test_fisor_candidates_at_run_time_are_the_trained_chain(bundle_dir):
    """The deployed FISOR-style decision samples its candidates with the chain the learner was
    trained and evaluated with (safefql_core.ddpm), over the exported denoiser: given the same
    draws, the runtime's candidates equal the torch learner's."""
    import torch

    from safefql_core.training import load_run
    bundle = load_bundle(bundle_dir)
    if bundle.algo != "fisor":
        pytest.skip("the DDPM chain is FISOR-style's")
    rt = Runtime(bundle, RuntimeConfig(seed=4))
    obs = np.array([0.3, -1.2], dtype=np.float32)
    candidates = rt._fisor_samples(obs)
    draws = np.random.default_rng(4).standard_normal((rt.fisor_steps, rt.fisor_n, 2)).astype(np.float32)
    learner, _ = load_run(bundle_dir.parent / "run")
    obs_n = learner.normalizer(torch.as_tensor(obs)).expand(rt.fisor_n, 2)
    trained = learner.sample(obs_n, torch.as_tensor(draws)).numpy()
    assert np.abs(candidates).max() > 0
    np.testing.assert_allclose(candidates, trained, atol=1e-5)


def test_bad_runtime_config_is_refused(bundle_dir):
    bundle = load_bundle(bundle_dir)
    with pytest.raises(ValueError, match="backend must be"):
        Runtime(bundle, RuntimeConfig(backend="tensorrt"))
    with pytest.raises(ValueError, match=r"differs from the bundle's in \['candidates'\].*override_decision"):
        Runtime(bundle, RuntimeConfig(decision=bundle.decision.with_changes(candidates=3)))


def test_fused_policy_graph_equals_actor_then_safety(bundle_dir):
    bundle = load_bundle(bundle_dir)
    if bundle.algo != "safefql":
        pytest.skip("the fused policy graph is SafeFQL's (FISOR samples outside the graph)")
    rt = Runtime(bundle)
    obs = np.random.default_rng(1).uniform([-3, -2], [2, 2], (16, 2)).astype(np.float32)
    noise = np.random.default_rng(2).standard_normal((16, 2)).astype(np.float32)
    action, q, v = rt.graphs.run("policy", {"observation": obs, "noise": noise})
    a2 = rt.graphs.run("actor", {"observation": obs, "noise": noise})[0]
    q2, v2 = rt.graphs.run("safety", {"observation": obs, "action": a2})
    np.testing.assert_allclose(action, a2, atol=1e-6)
    np.testing.assert_allclose(q, q2, atol=1e-5)
    np.testing.assert_allclose(v, v2, atol=1e-5)


def test_proposals_send_the_best_certified_action(bundle_dir):
    """proposals N: of the N actor noises (the first zero), the highest Q_reward among those
    with Q_safe < δ*, computed here from the graphs; the safest of all when none passes."""
    bundle = load_bundle(bundle_dir)
    if bundle.algo != "safefql":
        with pytest.raises(ValueError, match="needs a safefql bundle"):
            Runtime(bundle, RuntimeConfig(**override(bundle, proposals=2)))
        return
    n, seed = 8, 5
    for obs in np.random.default_rng(3).uniform([-3, -2], [2, 2], (50, 2)).astype(np.float32):
        noise = np.random.default_rng(seed).standard_normal((n, 2)).astype(np.float32)
        noise[0] = 0.0
        action, q_reward, q_safe, v_safe = Runtime(bundle).graphs.run(
            "proposals", {"observation": np.repeat(obs[None], n, axis=0), "noise": noise})
        threshold = float(np.median(q_safe))
        certified = q_safe < threshold
        best = int(np.argmax(np.where(certified, q_reward, -np.inf)))
        if best != int(np.argmin(q_safe)):   # a state where reward and safety pick differently
            break
    else:
        pytest.fail("no state where the best certified proposal is not the safest one")
    d = Runtime(bundle, RuntimeConfig(**override(bundle, proposals=n), seed=seed, threshold=threshold)).decide(obs)
    assert d.mode is Mode.NOMINAL
    np.testing.assert_allclose(d.action, action[best], atol=1e-6)
    assert d.q_safe == pytest.approx(float(q_safe[best]), abs=1e-5)
    # the proposal graph's action and safety are the fused policy graph's
    a2, q2, _ = Runtime(bundle).graphs.run("policy", {"observation": np.repeat(obs[None], n, axis=0), "noise": noise})
    np.testing.assert_allclose(action, a2, atol=1e-6)
    np.testing.assert_allclose(q_safe, q2, atol=1e-5)
    # torch rebuilds the same choice
    t = Runtime(bundle, RuntimeConfig(backend="torch", **override(bundle, proposals=n), seed=seed,
                                      threshold=threshold)).decide(obs)
    np.testing.assert_allclose(t.action, d.action, atol=1e-5)
    lowest = RuntimeConfig(**override(bundle, proposals=n, candidates=0, fallback_actions=[]), seed=seed,
                           threshold=bundle.threshold_range[0])
    none_pass = Runtime(bundle, lowest).decide(obs)
    assert none_pass.mode is Mode.UNSAFE and none_pass.q_safe == pytest.approx(float(q_safe.min()), abs=1e-5)


def test_bad_proposals_are_refused(bundle_dir):
    bundle = load_bundle(bundle_dir)
    with pytest.raises(ValueError, match="proposals must be an integer >= 1, got 0"):
        Runtime(bundle, RuntimeConfig(**override(bundle, proposals=0)))


def test_parity_is_relative_to_the_size_of_the_value():
    from safefql_core.bundle import check_parity

    class Session:  # onnxruntime's InferenceSession.run, returning fixed outputs
        def __init__(self, out):
            self.out = out

        def run(self, _names, _feeds):
            return [np.array(self.out, dtype=np.float32)]

    examples = {"inputs": {"obs": [[0.0]]}, "outputs": [[25.0, 0.5]]}
    assert check_parity(Session([25.0002, 0.5]), examples, "safety") <= 1e-5   # float32 rounding at 25
    with pytest.raises(BundleError, match="relative to max"):
        check_parity(Session([25.0, 0.5005]), examples, "safety")               # 5e-4 at 0.5
    at_tol = np.float32(1e-4)                       # 9.99999975e-05: within the tolerance
    zero = {"inputs": {"obs": [[0.0]]}, "outputs": [[0.0]]}
    assert check_parity(Session([at_tol]), zero, "safety") == pytest.approx(1e-4)
    with pytest.raises(BundleError, match="relative to max"):
        check_parity(Session([np.nextafter(at_tol, np.float32(1))]), zero, "safety")   # one float32 ulp above
    with pytest.raises(BundleError, match="differs from the stored torch output by nan"):
        check_parity(Session([np.nan, 0.5]), examples, "safety")                # NaN is no match
    with pytest.raises(BundleError, match="example outputs are not finite"):
        check_parity(Session([np.nan, 0.5]), {**examples, "outputs": [[np.nan, 0.5]]}, "safety")


def test_speed_latency_refuses_zero_threads_before_building_a_runtime(bundle, capsys):
    from offline_train import speed
    assert speed.main(["latency", "--bundle", bundle, "--threads", "0", "--calls", "10"]) == 2
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err


def test_speed_latency_times_the_proposals_decision(bundle, tmp_path, capsys):
    import json

    from offline_train import speed
    out = tmp_path / "latency.json"
    assert speed.main(["latency", "--bundle", bundle, "--proposals", "4", "--calls", "40", "--rounds", "2",
                       "--warmup", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["proposals"] == 4 and result["safefql_proposals_median_us"] > 0
    assert "safefql_proposals" in capsys.readouterr().out
    assert speed.main(["latency", "--bundle", bundle, "--proposals", "0", "--calls", "10"]) == 2
    assert "--proposals must be at least 1" in capsys.readouterr().err


def test_a_training_config_without_the_chain_is_named_with_the_fix(bundle_dir, tmp_path):
    """The FISOR-style runtime rebuilds its DDPM chain from the recorded training config; a
    SafeFQL bundle does not read it."""
    from safefql_core.runtime import load_runtime
    copy = edited_bundle(bundle_dir, tmp_path, lambda d: d["training"].update(config={}))
    if load_bundle(copy).algo == "safefql":
        assert load_runtime(str(copy)).decide(np.zeros(2)).mode is not Mode.REJECTED
        return
    with pytest.raises(BundleError, match=rf"^{copy}: bundle.json lacks 'diffusion_steps'; re-export the bundle$"):
        load_runtime(str(copy))

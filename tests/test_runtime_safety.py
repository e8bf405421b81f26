"""The runtime's refusals at their boundaries: state ages, non-finite outputs, the trained
observation range, the threshold. Each case sits exactly at, just inside and just outside the
limit it tests, with a stop action that differs from the default (zeros)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from safefql_core.bundle import load_bundle
from safefql_core.runtime import Mode, Runtime, RuntimeConfig

STOP = [0.25, -0.5]
TIMEOUT = 0.1
TOLERANCE = 0.005
STATE = np.array([-2.0, 0.0])


@pytest.fixture(scope="module")
def runtime(bundle) -> Runtime:
    return Runtime(load_bundle(bundle), RuntimeConfig(state_timeout=TIMEOUT, future_tolerance=TOLERANCE,
                                                      stop_action=STOP, threshold=0.5))


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
    rt = Runtime(load_bundle(bundle), RuntimeConfig(stop_action=STOP, threshold=0.5))
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


def test_a_non_finite_network_output_sends_the_stop(runtime):
    """3e38 is a finite float32 that overflows the first layer: the graphs return NaN, which
    fails every comparison of the decision without raising."""
    d = runtime.decide(np.array([3e38, 3e38], np.float32), 0.0, 0.0)
    assert_stop(d, "the networks' output is non-finite")
    assert not math.isfinite(d.q_safe)


def test_export_and_load_refuse_non_finite_example_outputs(bundle, tmp_path):
    import json
    import shutil

    import torch

    from offline_train.export import task_description
    from safefql_core.bundle import BundleError
    from safefql_core.bundle import export_bundle
    from safefql_core.training import load_run

    learner, meta = load_run(Path(bundle).parent / "run")
    with torch.no_grad():
        next(learner.qc.parameters()).fill_(float("nan"))
    obs = np.zeros((16, 2), np.float32)
    with pytest.raises(BundleError, match="example outputs are not finite"):
        export_bundle(learner, meta, tmp_path / "nan_bundle", obs, None, task_description(meta))
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    doc = json.loads((copy / "bundle.json").read_text())
    doc["examples"]["safety"]["outputs"][0][0] = float("nan")  # json writes NaN
    (copy / "bundle.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="example outputs are not finite"):
        load_bundle(copy)

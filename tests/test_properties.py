"""Property-based tests (Hypothesis) of what stands between bad input and the robot: the
runtime decision and the dataset and bundle loaders.

Over arbitrary states, ages, dtypes, shapes and bundle.json mutations the outcome is always
one of: a decision whose action is finite and within [-1, 1], a REJECTED decision that sends
the stop action, or the project's own error type. Never NaN, never an uncaught exception.
Examples are derandomised, so the suite is deterministic.
"""
from __future__ import annotations

import copy
import json
import math
import shutil

import h5py
import numpy as np
import pytest
from conftest import override
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from safefql_core.bundle import BundleError, load_bundle
from safefql_core.data import OPTIONAL_KEYS, REQUIRED_KEYS, DatasetError, load_dataset
from safefql_core.runtime import Mode, Runtime, RuntimeConfig
from safefql_core.tasks import TaskSpecError

STOP = [0.25, -0.5]
PROPERTY = settings(derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)
DTYPES = st.sampled_from([np.float64, np.float32, np.float16, np.int64, np.int8, np.uint16, np.bool_,
                          np.complex64, np.dtype("U3"), np.dtype("S2")])
STORABLE_DTYPES = st.sampled_from([np.float64, np.float32, np.float16, np.int64, np.int8, np.uint16, np.bool_,
                                   np.complex64, np.dtype("S2")])   # what HDF5 can store
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
STATES = st.one_of(
    st.lists(st.floats(-8.0, 7.0), min_size=2, max_size=2),          # near and past the trained range
    hnp.arrays(DTYPES, SHAPES),
    st.lists(ANY_FLOAT, max_size=4),
    st.lists(st.lists(ANY_FLOAT, max_size=3), max_size=3),           # ragged
    st.none(), ANY_FLOAT, st.text(max_size=4), st.dictionaries(st.text(max_size=2), ANY_FLOAT, max_size=2),
)
AGES = st.one_of(st.none(), ANY_FLOAT, st.floats(-0.01, 0.2), st.integers(-5, 5), st.text(max_size=3),
                 st.booleans())


def trusted(age) -> bool:
    """The runtime's age rule, stated independently: none, or a number of seconds within
    [-future_tolerance, state_timeout] (the fixture's 5 ms and 100 ms)."""
    return age is None or (isinstance(age, (int, float)) and not isinstance(age, bool) and -0.005 <= age <= 0.1)


@pytest.fixture(scope="module", params=["reject", "warn"])
def runtime(request, bundle) -> Runtime:
    """Both range policies, with fallbacks and candidates so every decision path is reached."""
    return Runtime(load_bundle(bundle), RuntimeConfig(
        state_timeout=0.1, period=0.02, out_of_range=request.param,
        **override(bundle, stop_action=STOP, fallback_actions=[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], candidates=4)))


@settings(PROPERTY, max_examples=400)
@given(obs=STATES, age=AGES, received=AGES)
def test_every_decision_is_a_finite_action_in_bounds_or_the_stop(runtime, obs, age, received):
    d = runtime.decide(obs, age, received)
    assert isinstance(d.mode, Mode)
    if not (trusted(age) and trusted(received)):
        assert d.mode is Mode.REJECTED, (age, received, d)
    assert d.action.shape == (2,) and np.isfinite(d.action).all() and (np.abs(d.action) <= 1.0).all(), d
    if d.mode is Mode.REJECTED:
        assert d.action.tolist() == STOP and d.reason
    else:
        assert math.isfinite(d.q_safe) and math.isfinite(d.v_safe)


# ---- the dataset loader -------------------------------------------------------------------------
GROUP, SCALAR, MISSING = "group", "scalar", "missing"


@st.composite
def dataset_files(draw):
    """Per key: a well-formed column (N rows), nothing, a group, a scalar, or any array."""
    n, obs_dim, act_dim = draw(st.integers(0, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
    width = {"observations": obs_dim, "next_observations": obs_dim, "actions": act_dim}
    columns = {}
    for key in REQUIRED_KEYS + OPTIONAL_KEYS:
        kind = draw(st.sampled_from(["good", "good", "good", MISSING, GROUP, SCALAR, "any"]))
        shape = (n, width[key]) if key in width else (n,)
        if kind == "good":
            bound = 1.0 if key == "actions" else 1e3
            columns[key] = draw(hnp.arrays(np.float32, shape, elements=st.floats(-bound, bound, width=32)))
        elif kind == "any":
            columns[key] = draw(hnp.arrays(STORABLE_DTYPES, SHAPES))
        elif kind != MISSING:
            columns[key] = kind
    return columns


@settings(PROPERTY, max_examples=150)
@given(columns=dataset_files())
def test_the_dataset_loader_returns_valid_data_or_a_dataset_error(tmp_path, columns):
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        for key, value in columns.items():
            if value is GROUP:
                f.create_group(key)
            elif value is SCALAR:
                f.create_dataset(key, data=1.0)
            else:
                f.create_dataset(key, data=value)
    try:
        data = load_dataset(path)
    except DatasetError:
        return
    n = len(data)
    assert n > 0 and data.observations.ndim == 2 and data.next_observations.shape == data.observations.shape
    for key in REQUIRED_KEYS + OPTIONAL_KEYS:
        arr = getattr(data, key)
        if arr is not None:
            assert arr.dtype == np.float32 and len(arr) == n and np.isfinite(arr).all(), key
    assert np.abs(data.actions).max() <= 1.0 + 1e-5


# ---- the bundle loader --------------------------------------------------------------------------
JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | ANY_FLOAT | st.text(max_size=6),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=6)


def mutate(doc, data) -> object:
    """Delete or replace one entry somewhere in the document (or the document itself)."""
    if data.draw(st.integers(0, 19)) == 0:
        return data.draw(JSON)
    node = doc
    if not isinstance(node, (dict, list)):  # an earlier mutation replaced the whole document
        return doc
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return doc
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, (dict, list)) and child and data.draw(st.booleans()):
            node = child
            continue
        if data.draw(st.booleans()):
            del node[key]
        else:
            node[key] = data.draw(JSON)
        return doc


@pytest.fixture(scope="module")
def bundle_copy(bundle, tmp_path_factory):
    copy_dir = tmp_path_factory.mktemp("mutated") / "bundle"
    shutil.copytree(bundle, copy_dir)
    return copy_dir, json.loads((copy_dir / "bundle.json").read_text())


@settings(PROPERTY, max_examples=120)
@given(data=st.data())
def test_the_bundle_loader_returns_a_working_bundle_or_a_bundle_error(bundle_copy, data):
    path, original = bundle_copy
    doc = copy.deepcopy(original)
    for _ in range(data.draw(st.integers(1, 3))):
        doc = mutate(doc, data)
    (path / "bundle.json").write_text(json.dumps(doc))
    try:
        bundle = load_bundle(path)
        bundle.task_spec()
        runtime = Runtime(bundle, RuntimeConfig(**override(bundle, stop_action=STOP)))
    except (BundleError, TaskSpecError):
        return
    d = runtime.decide([-2.0, 0.0])
    assert np.isfinite(d.action).all() and (np.abs(d.action) <= 1.0).all()
    assert d.mode is not Mode.REJECTED or d.action.tolist() == STOP

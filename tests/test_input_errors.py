"""Bad input from a careless or hostile user: each is refused with the project's own error and
a message naming the problem, never a traceback, and refused before any work is done."""
from __future__ import annotations

import json
import shutil
import typing
from dataclasses import fields

import h5py
import numpy as np
import pytest
from conftest import edited_bundle, make_dataset

from offline_train import collect, convert, fit
from offline_train.cli import parse_override
from safefql_core.agent import SafeFQLConfig
from safefql_core.bc import BCConfig
from safefql_core.bundle import BundleError, load_bundle, sha256
from safefql_core.config import RANGES
from safefql_core.data import DatasetError, load_dataset, save_dataset
from safefql_core.fisor import FISORConfig

CONFIGS = (SafeFQLConfig, BCConfig, FISORConfig)


# ---- datasets ----------------------------------------------------------------------------------
GROUP = object()  # write an HDF5 group instead of a dataset


@pytest.mark.parametrize("key, value, message", [
    ("rewards", GROUP, "'rewards' is an HDF5 group, not an array"),
    ("rewards", 1.0, "'rewards' is a scalar"),
    ("rewards", np.ones(20, np.complex64), "'rewards' has dtype complex64"),
    ("observations", np.ones((20, 3), np.complex128), "'observations' has dtype complex128"),
    ("costs", np.array([b"a"] * 20), r"'costs' has dtype \|S1"),
])
def test_a_dataset_key_that_is_not_a_real_array_is_refused(tmp_path, key, value, message):
    path = tmp_path / "d.h5"
    save_dataset(path, make_dataset())
    with h5py.File(path, "a") as f:
        del f[key]
        if value is GROUP:
            f.create_group(key)
        else:
            f.create_dataset(key, data=value)
    with pytest.raises(DatasetError, match=message):
        load_dataset(path)


# ---- collect and convert: arguments and --out, checked before the work ---------------------------
@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "argument --seed: must be at least 0, got -1"),
    (["--episodes", "0"], "argument --episodes: must be at least 1, got 0"),
    (["--transitions", "-3"], "argument --transitions: must be at least 1"),
    (["--task", "SafetyPointCircle1-v0", "--max-episode-steps", "-5"], "--max-episode-steps: must be at least 1"),
    (["--action-repeat", "0"], "--action-repeat: must be at least 1, got 0"),
    (["--seed", "x"], "expected an integer, got 'x'"),
])
def test_collect_refuses_bad_numbers(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        collect.main([*args, "--out", str(tmp_path / "d.h5"), "--no-progress"])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _not_writable(tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    return tmp_path / "file" / "d.h5"


@pytest.mark.parametrize("out, message", [
    (lambda p: p, "is a directory; give a file path"),
    (_not_writable, "cannot write output"),
])
def test_collect_and_convert_check_out_before_the_work(tmp_path, capsys, out, message):
    """1,000,000 episodes would take hours: the refusal has to come first."""
    target = out(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit):
        collect.main(["--episodes", "1000000", "--out", str(target), "--no-progress"])
    assert message in capsys.readouterr().err
    assert convert.main(["--bag", str(tmp_path / "no_bag"), "--out", str(target), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before   # nothing written, no stray .tmp or probe


# ---- fit: flags and config values ---------------------------------------------------------------
@pytest.mark.parametrize("extra, message", [
    (["--set", "batch_size=-5"], "'batch_size' must be in [1, 1e+07], got -5"),
    (["--set", "batch_size=0"], "'batch_size' must be in [1, 1e+07], got 0"),
    (["--set", "lr=abc"], "'lr' must be a number, got 'abc'"),
    (["--set", "gamma=1.5"], "'gamma' must be in [0, 1), got 1.5"),
    (["--set", "expectile=2"], "'expectile' must be in (0, 1), got 2"),
    (["--set", "ema=5"], "'ema' must be in (0, 1], got 5"),
    (["--set", "flow_steps=0"], "'flow_steps' must be in [1, 1000], got 0"),
    (["--set", "phases=[0.6,0.4]"], "'phases' must be 2 numbers in [0, 1] in increasing order"),
    (["--set", "critic_hidden=[]"], "'critic_hidden' must be a non-empty list of integers"),
    (["--set", "lr=nan"], "'lr' must be in (0, 1], got nan"),
    (["--steps", "0"], "argument --steps: must be at least 1, got 0"),
    (["--seed", "-1"], "argument --seed: must be at least 0, got -1"),
    (["--device", "tpu"], "--device must be cpu, cuda, cuda:N or auto, got 'tpu'"),
])
def test_fit_refuses_bad_values_before_training(tiny_boat_h5, tmp_path, capsys, extra, message):
    try:
        code = fit.main(["--data", tiny_boat_h5, "--out", str(tmp_path / "run"), "--no-progress", *extra])
    except SystemExit as exit_:  # argparse's own refusal
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_number_in_exponent_notation_is_a_number():
    assert parse_override("lr=3e-4") == ("lr", 3e-4)      # YAML 1.1 alone reads it as a string
    assert parse_override("schedule=phased") == ("schedule", "phased")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.__name__)
def test_every_config_value_has_a_range(config):
    """A number or list key without a RANGES entry would accept anything; bools and strings
    are checked by type (and strings against their choices in check())."""
    hints = typing.get_type_hints(config)
    unranged = [f.name for f in fields(config) if hints[f.name] not in (bool, str) and f.name not in RANGES]
    assert unranged == []
    config.from_dict({})  # the defaults lie in their ranges


# ---- bundles ------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["files", "graphs", "examples", "task", "margin_range", "observation_range",
                                 "calibration", "obs_dim"])
def test_bundle_json_without_an_entry_is_refused(bundle, tmp_path, key):
    with pytest.raises(BundleError, match=f"lacks '{key}'"):
        load_bundle(edited_bundle(bundle, tmp_path, lambda d: d.pop(key)))


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "holds a JSON list, not an object"), ('"bundle"', "holds a JSON str"),
])
def test_bundle_json_that_is_not_an_object_is_refused(bundle, tmp_path, text, message):
    with pytest.raises(BundleError, match=message):
        load_bundle(edited_bundle(bundle, tmp_path, text=text))


@pytest.mark.parametrize("key, value", [("files", []), ("obs_dim", "2"), ("obs_dim", True), ("task", "boat")])
def test_bundle_json_entries_of_the_wrong_type_are_refused(bundle, tmp_path, key, value):
    with pytest.raises(BundleError, match=f"'{key}' must be a JSON"):
        load_bundle(edited_bundle(bundle, tmp_path, lambda d: d.update({key: value})))


def test_a_file_that_is_not_onnx_is_refused(bundle, tmp_path):
    copy = edited_bundle(bundle, tmp_path, lambda d: None)
    (copy / "actor.onnx").write_bytes(b"not an onnx graph")
    doc = json.loads((copy / "bundle.json").read_text())
    doc["files"]["actor.onnx"] = sha256(copy / "actor.onnx")   # a consistent checksum: the content is wrong
    (copy / "bundle.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="actor.onnx is not an ONNX graph onnxruntime can load"):
        load_bundle(copy)


def test_examples_that_do_not_fit_the_graph_are_refused(bundle, tmp_path):
    copy = edited_bundle(bundle, tmp_path, lambda d: d["examples"]["safety"]["inputs"].update(observation=[[1.0]]))
    with pytest.raises(BundleError, match="safety.onnx: the stored examples in bundle.json do not fit the graph"):
        load_bundle(copy)


def test_bundle_json_that_is_not_text_is_refused(bundle, tmp_path):
    copy = edited_bundle(bundle, tmp_path, text="")
    (copy / "bundle.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BundleError, match="is not valid JSON"):
        load_bundle(copy)


def test_a_damaged_calibration_file_is_a_clear_export_error(bundle, tmp_path, capsys):
    from pathlib import Path

    from offline_train import export
    run = tmp_path / "run"
    shutil.copytree(Path(bundle).parent / "run", run)
    (run / "calibration.json").write_text('{"delta": -0.1, ')
    assert export.main(["--run", str(run), "--out", str(tmp_path / "out")]) == 2
    assert "calibration.json cannot be read" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    (b"not a numpy file", "not a .npy array"),
    (np.ones((3, 2), np.complex64), "array of finite real x, y states"),
    (np.array([["a", "b"]]), "array of finite real x, y states"),
])
def test_evaluate_refuses_initial_states_that_are_not_states(bundle, tmp_path, capsys, content, message):
    from offline_train import evaluate
    path = tmp_path / "states.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content)
    assert evaluate.main(["--bundle", bundle, "--init-states", str(path)]) == 2
    assert message in capsys.readouterr().err

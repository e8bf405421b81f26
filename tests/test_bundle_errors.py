"""Each refusal of a malformed bundle names the file it is about and ends with the fix.

A robot engineer meets these messages when a bundle was copied badly, hand-edited or built by
another version; the fix at the end of each is what they act on, so it is checked verbatim.
The boundaries of the loader's checks (equal ends of a range, the parity tolerance, a graph
input of rank 1) sit here too: what `load_bundle` must accept is as much its contract as what
it refuses."""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import edited_bundle

from safefql_core.bundle import PARITY_TOL, BundleError, check_parity, load_bundle, ort_session, sha256
from safefql_core.runtime import Mode, Runtime, RuntimeConfig


def _nudge_output(doc: dict, graph: str) -> None:
    doc["examples"][graph]["outputs"][0][0] += 1.0


def _drop(name: str) -> Callable[[Path], None]:
    return lambda copy: (copy / name).unlink()


def _append_to(name: str) -> Callable[[Path], None]:
    return lambda copy: (copy / name).write_bytes((copy / name).read_bytes() + b"\0")


# (bundle.json edit, file change, where the message starts, relative to the copy, how it ends)
REFUSALS = {
    "graph list": (lambda d: d["graphs"].pop("proposals"), None,
                   "/bundle.json: 'graphs' lists", "— re-export it with offline_train.export"),
    "file outside": (lambda d: d["files"].update({"../x": "0" * 64}), None,
                     "/bundle.json: 'files' names", "; a bundle lists only its own files — re-export it"),
    "file list": (lambda d: d["files"].pop("weights.pt"), None,
                  "/bundle.json: 'files' lists", ", each with its sha256 — re-export it with offline_train.export"),
    "period": (lambda d: d["task"].update(control_period=-1.0), None,
               "/bundle.json: task control_period", "; fix the dataset's control_period and re-export"),
    "entry type": (lambda d: d.update(obs_dim="2"), None,
                   "/bundle.json: 'obs_dim' must be a JSON integer", "; re-export the bundle"),
    "threshold": (lambda d: d.update(calibration={"delta": 1e9}), None,
                  ": calibration δ* = 1000000000.0", "; recalibrate with offline_train.calibrate and re-export"),
    "non-finite examples": (lambda d: d["examples"]["actor"].update(outputs=[[[math.nan, 0.0]]]), None,
                            "/actor.onnx: the stored example outputs are not finite",
                            "; retrain — offline_train.fit stops on a non-finite loss"),
    "parity": (lambda d: _nudge_output(d, "safety"), None, "/safety.onnx: onnxruntime output differs",
               " was built for another runtime version — re-export with offline_train.export"),
    "checksum": (None, _append_to("weights.pt"), ": checksum of weights.pt does not match bundle.json",
                 "; the file was modified or truncated — copy the bundle again or re-export it"),
    "no bundle.json": (None, _drop("bundle.json"), " is not a policy bundle (no bundle.json)",
                       "; create one with `python -m offline_train.export --run runs/boat --out bundle/`"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_a_refusal_names_the_file_and_ends_with_the_fix(bundle, tmp_path, case):
    edit, change, start, fix = REFUSALS[case]
    copy = edited_bundle(bundle, tmp_path, edit)
    if change is not None:
        change(copy)
    with pytest.raises(BundleError) as error:
        load_bundle(copy)
    message = str(error.value)
    assert message.startswith(f"{copy}{start}"), message
    assert message.endswith(fix), message


def test_a_graph_onnxruntime_cannot_load_ends_with_the_fix():
    with pytest.raises(BundleError) as error:
        ort_session(b"not a graph")
    assert str(error.value).startswith("the exported graph is not an ONNX graph onnxruntime can load (")
    assert str(error.value).endswith("); re-export the bundle with offline_train.export")


def test_a_task_entry_without_its_name_is_named_with_the_fix(bundle, tmp_path):
    copy = edited_bundle(bundle, tmp_path, lambda d: d["task"].pop("name"))
    loaded = load_bundle(copy)
    with pytest.raises(BundleError) as error:
        loaded.task_spec()
    message = str(error.value)
    assert message.startswith(f"{copy}: the task entry of bundle.json is not a task spec ("), message
    assert message.endswith("); re-export the bundle"), message


def test_a_conflicting_spec_is_named_as_a_config_unless_said_otherwise(bundle):
    from safefql_core.tasks import TaskSpec, TaskSpecError
    loaded = load_bundle(bundle)
    doc = loaded.task_spec().to_dict()
    doc["command"]["low"] = [2 * v for v in doc["command"]["low"]]   # another command range: another robot
    given = TaskSpec.from_dict(doc, "boat")
    with pytest.raises(TaskSpecError, match="^--config does not match the spec the bundle was trained with"):
        loaded.task_spec(given)
    with pytest.raises(TaskSpecError, match="^the node's spec does not match"):
        loaded.task_spec(given, "the node's spec")


def test_equal_ends_of_the_observation_and_margin_ranges_are_accepted(bundle, tmp_path):
    """A state feature that was constant in the training data has low == high, and a task whose
    logged margins were all one value has min == max: both are ranges, not errors."""
    def flatten(doc: dict) -> None:
        box = doc["observation_range"]
        box["high"][0] = box["low"][0]
        doc["margin_range"] = [doc["margin_range"][0]] * 2
    loaded = load_bundle(edited_bundle(bundle, tmp_path, flatten))
    low = loaded.meta["observation_range"]["low"]
    assert loaded.meta["observation_range"]["high"][0] == low[0]
    state = np.array([low[0], loaded.meta["observation_range"]["high"][1]])
    decision = Runtime(loaded, RuntimeConfig()).decide(state, age=0.0)
    assert decision.mode is not Mode.REJECTED, decision.reason


def test_onnxruntime_sessions_default_to_one_thread_each_way(bundle):
    """A control loop shares its core with the ROS executor: the sessions must not start
    thread pools of their own unless asked."""
    options = ort_session(str(Path(bundle) / "actor.onnx")).get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)


def test_a_graph_input_of_rank_one_is_refused_with_its_width(bundle, tmp_path):
    """A graph whose observation input has no batch axis (hand-built, or another exporter's)
    is named, not an IndexError."""
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Identity", ["observation"], ["action"])], "rank1",
                              [helper.make_tensor_value_info("observation", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("action", TensorProto.FLOAT, [2])])
    copy = edited_bundle(bundle, tmp_path)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), copy / "actor.onnx")
    doc = (copy / "bundle.json").read_text().replace(sha256(Path(bundle) / "actor.onnx"), sha256(copy / "actor.onnx"))
    (copy / "bundle.json").write_text(doc)
    with pytest.raises(BundleError, match="actor.onnx input 'observation' has width None, bundle.json declares 2"):
        load_bundle(copy)


def test_a_difference_exactly_at_the_parity_tolerance_passes():
    class Session:  # onnxruntime's InferenceSession.run in float64, so the difference is exact
        def run(self, _names, _feeds):
            return [np.array([PARITY_TOL], dtype=np.float64)]

    assert check_parity(Session(), {"inputs": {"obs": [[0.0]]}, "outputs": [[0.0]]}, "safety") == PARITY_TOL

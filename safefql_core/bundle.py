"""The policy bundle: the one artifact a robot needs (ARCHITECTURE.md, "Policy bundle").

A directory with ONNX graphs, the learner's weights for the torch debug backend,
`bundle.json` (everything needed to run and to audit the policy) and `MODEL_CARD.md`.
Normalisation and clipping are inside the graphs, so a consumer feeds raw observations
and gets actions in [-1, 1]. Export (`safefql_core.bundle_export`) checks torch against
onnxruntime on stored example inputs, and loading repeats that check: a bundle that does not
reproduce its own examples is refused rather than run. This module is what a robot loads: it
imports no torch (numpy, onnxruntime), so the node starts in a fraction of a second.
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from safefql_core.decision import DecisionError, DecisionSettings
from safefql_core.learners import CAPABILITIES

# The bundle's public API: loading and verifying (here) and the layout export writes.
__all__ = [
    "BUNDLE_JSON", "Bundle", "BundleError", "GRAPHS", "GRAPHS_BY_ALGO", "GraphSpec", "SCHEMA_VERSION",
    "WEIGHTS", "check_parity", "load_bundle", "ort_session", "sha256",
]

# 2: observation_range and margin_range (the runtime's range check and δ*'s bounds), exact files.
# 3: `decision`, the deployed decision's settings, and `calibration.decision`, the one δ* was
#    calibrated on (safefql_core.decision). A schema-2 bundle still loads: its decision is the
#    task's default one (what the node and `evaluate` deployed it with), and its δ* certifies
#    the raw z = 0 actor, which the runtime says (LEGACY_CERTIFIES).
SCHEMA_VERSION = 3
READABLE_SCHEMAS = (2, 3)
LEGACY_CERTIFIES = "the raw z = 0 actor (a schema-2 calibration: not the deployed decision)"
BUNDLE_JSON = "bundle.json"
WEIGHTS = "weights.pt"
# float32 agreement between onnxruntime and torch, relative to max(1, |value|): Q values on
# the boat are O(1), but a +25 / -1 margin (0/1-cost tasks) gives safety values near 25,
# where float32 rounding differs by ~2e-4 in absolute terms. The boat's 128-wide nets agree
# to ~2e-6; Safety Gymnasium's 256-wide ones on 60-d inputs to ~1.1e-5 (other summation
# orders). 1e-4 passes both; a corrupt or mismatched graph is off by orders more.
PARITY_TOL = 1e-4


class BundleError(ValueError):
    """A bundle that cannot be trusted; the message names the problem and the fix."""


# ---- the graphs a bundle holds ---------------------------------------------------------------
@dataclass(frozen=True)
class GraphSpec:
    file: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


GRAPHS = {
    "actor": GraphSpec("actor.onnx", ("observation", "noise"), ("action",)),
    "safety": GraphSpec("safety.onnx", ("observation", "action"), ("q_safe", "v_safe")),
    "policy": GraphSpec("policy.onnx", ("observation", "noise"), ("action", "q_safe", "v_safe")),
    "proposals": GraphSpec("proposals.onnx", ("observation", "noise"), ("action", "q_reward", "q_safe", "v_safe")),
    "denoiser": GraphSpec("denoiser.onnx", ("observation", "x", "t"), ("eps",)),
}
GRAPHS_BY_ALGO = {name: can.graphs for name, can in CAPABILITIES.items() if can.deployable}


# ---- files and sessions --------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ort_session(model: bytes | str, threads: int = 1):
    """An onnxruntime session with explicit thread counts; CUDA provider when present."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    try:
        return ort.InferenceSession(model, opts, providers=providers)
    except ort_errors() as exc:
        where = model if isinstance(model, str) else "the exported graph"
        raise BundleError(f"{where} is not an ONNX graph onnxruntime can load ({exc}); re-export the bundle "
                          "with offline_train.export") from None


def ort_errors() -> tuple[type[Exception], ...]:
    """What onnxruntime raises for a bad model or bad inputs: its own types, which derive from
    Exception only (not from ValueError or RuntimeError)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state
    return (state.Fail, state.InvalidArgument, state.InvalidGraph, state.InvalidProtobuf, state.NoSuchFile,
            state.RuntimeException, state.NotImplemented)


def check_parity(session, examples: dict[str, Any], name: str) -> float:
    """The worst difference between onnxruntime and the stored torch outputs, relative to
    max(1, |torch output|); raises above PARITY_TOL."""
    feeds = {k: np.asarray(v, dtype=np.float32) for k, v in examples["inputs"].items()}
    expected = [np.asarray(e, dtype=np.float32) for e in examples["outputs"]]
    if not all(np.isfinite(e).all() for e in expected):
        raise BundleError(f"{name}: the stored example outputs are not finite: the network's weights are NaN or "
                          "infinite (training diverged); retrain — offline_train.fit stops on a non-finite loss")
    got = session.run(None, feeds)
    if len(got) != len(expected):
        raise BundleError(f"{name}: the graph has {len(got)} outputs, the stored examples {len(expected)}; "
                          "re-export the bundle with offline_train.export")
    # np.max, not Python's max: max(0.0, nan) is 0.0, which would pass a NaN output as exact.
    worst = float(np.max([np.max(np.abs(g - e) / np.maximum(1.0, np.abs(e))) for g, e in zip(got, expected)]))
    if not worst <= PARITY_TOL:
        raise BundleError(f"{name}: onnxruntime output differs from the stored torch output by {worst:.3g} "
                          f"(relative to max(1, |value|); tolerance {PARITY_TOL}); the graph is corrupt or "
                          "was built for another runtime version — re-export with offline_train.export")
    return worst



# ---- load ----------------------------------------------------------------------------------
@dataclass
class Bundle:
    path: Path
    meta: dict[str, Any]

    @property
    def algo(self) -> str:
        return self.meta["algo"]

    @property
    def obs_dim(self) -> int:
        return self.meta["obs_dim"]

    @property
    def act_dim(self) -> int:
        return self.meta["act_dim"]

    @property
    def threshold(self) -> float:
        """δ*: the calibrated threshold, 0 (the paper's gate) when uncalibrated."""
        cal = self.meta.get("calibration")
        return float(cal["delta"]) if cal else 0.0

    @property
    def decision(self) -> DecisionSettings:
        """The deployed decision's settings: the bundle's own (schema 3), or for a schema-2
        bundle the task's defaults, with which the node and `evaluate` deployed it."""
        entry = self.meta.get("decision")
        if entry is None:
            return DecisionSettings.for_task(self.meta["task"].get("name", ""), self.act_dim)
        return DecisionSettings.from_dict(entry, self.act_dim)

    @property
    def certified_decision(self) -> DecisionSettings | None:
        """The decision δ* was calibrated on; None when uncalibrated (δ* = 0, the paper's gate,
        certifies nothing) or calibrated on the raw actor (a schema-2 bundle: LEGACY_CERTIFIES)."""
        cal = self.meta.get("calibration")
        entry = cal.get("decision") if cal else None
        return None if entry is None else DecisionSettings.from_dict(entry, self.act_dim)

    @property
    def threshold_range(self) -> tuple[float, float]:
        """The δ* values that keep the safety check meaningful. Every learned Q_safe lies in the
        training margin range [lo, hi] (its targets combine margin values), so a threshold above
        hi passes every action and one below lo fails all; conformal calibration can reach
        lo − (hi − lo) at most (δ* = −q̂, scores y − V̂ ≤ hi − lo). 0, the paper's gate, is always
        allowed."""
        lo, hi = self.meta["margin_range"]
        return min(lo - (hi - lo), 0.0), max(hi, 0.0)

    def check_threshold(self, value: Any, what: str, fix: str) -> float:
        """`value` as a float when it is a finite threshold in `threshold_range`, else BundleError."""
        lo, hi = self.threshold_range
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not lo <= cast(float, value) <= hi:
            raise BundleError(f"{self.path}: {what} = {value!r} is not a threshold in [{lo:.4g}, {hi:.4g}] "
                              f"(safety values of this policy lie in its training margin range "
                              f"{self.meta['margin_range']}); {fix}")
        return float(value)

    @property
    def decision_period(self) -> float | None:
        """Seconds between decisions: the control period times the action repeat (a policy
        trained on `collect --action-repeat K` data decides every K periods); None when the
        bundle records no period (a dataset without one)."""
        task = self.meta["task"]
        period = task.get("control_period")
        return None if period is None else float(period) * task.get("action_repeat", 1)

    def task_spec(self, given=None, given_as: str = "--config"):
        """The task spec to deploy the policy with: the one it records (or its task's built-in
        one), or `given` (a --config, a node parameter) where that matches it
        (`tasks.resolve_spec`). A spec that reads another number of state or command values
        would have every state rejected, so it is refused here, at start."""
        from safefql_core.tasks import resolve_spec
        try:
            return resolve_spec(self.meta, given, given_as)
        except (KeyError, TypeError, AttributeError) as exc:  # a spec edited into another shape
            raise BundleError(f"{self.path}: the task entry of {BUNDLE_JSON} is not a task spec ({exc!r}); "
                              "re-export the bundle") from None

    def file(self, graph: str) -> Path:
        return self.path / GRAPHS[graph].file


def load_bundle(path: str | Path, check: bool = True) -> Bundle:
    """Read and verify a bundle: schema, files, checksums, dimensions, and ORT parity."""
    path = Path(path)
    if not (path / BUNDLE_JSON).is_file():
        raise BundleError(f"{path} is not a policy bundle (no {BUNDLE_JSON}); create one with "
                          "`python -m offline_train.export --run runs/boat --out bundle/`")
    try:
        meta = json.loads((path / BUNDLE_JSON).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path / BUNDLE_JSON} is not valid JSON ({exc}); re-export the bundle") from exc
    _check_meta(path, meta)
    for name, digest in meta["files"].items():
        file = path / name
        if not file.is_file():
            raise BundleError(f"{path}: file {name} listed in {BUNDLE_JSON} is missing; copy the whole bundle")
        if check and sha256(file) != digest:
            raise BundleError(f"{path}: checksum of {name} does not match {BUNDLE_JSON}; the file was modified "
                              "or truncated — copy the bundle again or re-export it")
    bundle = Bundle(path, meta)
    if check:
        verify_graphs(bundle)
    return bundle


# bundle.json's top-level entries and their JSON types; `calibration` may also be null.
FIELDS = {"schema_version": int, "algo": str, "obs_dim": int, "act_dim": int, "task": dict,
          "observation_normalisation": dict, "observation_range": dict, "margin_range": list, "calibration": dict,
          "graphs": dict, "examples": dict, "files": dict, "training": dict}


def _check_meta(path: Path, meta: Any) -> None:
    """bundle.json's structure and values, before anything is read from it: each failure
    names the entry (a hand-edited or truncated file must not surface as a KeyError)."""
    where = f"{path / BUNDLE_JSON}"
    if not isinstance(meta, dict):
        raise BundleError(f"{where} holds a JSON {type(meta).__name__}, not an object; re-export the bundle")
    version = meta.get("schema_version")
    if version not in READABLE_SCHEMAS:
        raise BundleError(f"{path}: bundle schema version {version!r} but this safefql reads versions "
                          f"{list(READABLE_SCHEMAS)}; re-export it with this version")
    for key, kind in {**FIELDS, **({"decision": dict} if version >= 3 else {})}.items():
        if key not in meta:
            raise BundleError(f"{where} lacks '{key}'; re-export the bundle with offline_train.export")
        value = meta[key]
        if (key != "calibration" or value is not None) and (isinstance(value, bool) or not isinstance(value, kind)):
            raise BundleError(f"{where}: '{key}' must be a JSON {_json_type(kind)}, got {value!r:.80}; "
                              "re-export the bundle")
    box = meta["observation_range"]
    low, high = box.get("low"), box.get("high")
    if not (isinstance(low, list) and isinstance(high, list) and len(low) == len(high) == meta["obs_dim"]
            and all(_finite(v) for v in low + high) and all(lo <= hi for lo, hi in zip(low, high))):
        raise BundleError(f"{where}: 'observation_range' needs 'low' <= 'high', {meta['obs_dim']} finite numbers "
                          "each; re-export the bundle")
    margin = meta["margin_range"]
    if not (len(margin) == 2 and all(_finite(v) for v in margin) and margin[0] <= margin[1]):
        raise BundleError(f"{where}: 'margin_range' must be [min, max] of finite numbers, got {margin!r:.80}")
    _check_contents(where, meta)
    task = meta["task"]
    period, repeat = task.get("control_period"), task.get("action_repeat", 1)
    if period is not None and not (_finite(period) and period > 0):
        raise BundleError(f"{where}: task control_period must be a positive number of seconds, got {period!r}; "
                          "fix the dataset's control_period and re-export")
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise BundleError(f"{where}: task action_repeat must be an integer >= 1, got {repeat!r}; re-export")
    bundle = Bundle(path, meta)
    if meta["calibration"] is not None:
        bundle.check_threshold(meta["calibration"].get("delta"), "calibration δ*",
                               "recalibrate with offline_train.calibrate and re-export")
    try:
        bundle.decision, bundle.certified_decision  # noqa: B018 (checked here, before any use)
    except DecisionError as exc:
        raise BundleError(f"{where}: the decision settings are invalid ({exc}); re-export the bundle") from None


def _check_contents(where: str, meta: dict[str, Any]) -> None:
    """Exactly the graphs and files of the bundle's algorithm, each file by a plain name: a
    missing entry would skip its checksum, and a path could point outside the bundle."""
    algo = meta["algo"]
    if algo not in GRAPHS_BY_ALGO:
        raise BundleError(f"{where}: algorithm '{algo}' has no deployable bundle (have {sorted(GRAPHS_BY_ALGO)})")
    graphs = sorted(GRAPHS_BY_ALGO[algo])
    for key in ("graphs", "examples"):
        if sorted(meta[key]) != graphs:
            raise BundleError(f"{where}: '{key}' lists {sorted(meta[key])}; a {algo} bundle has exactly {graphs} — "
                              "re-export it with offline_train.export")
    names = list(meta["files"])
    outside = [n for n in names if "/" in n or "\\" in n or ".." in n or not n]
    if outside:
        raise BundleError(f"{where}: 'files' names {outside}, which are not plain file names inside the bundle; "
                          "a bundle lists only its own files — re-export it")
    expected = sorted([GRAPHS[g].file for g in graphs] + [WEIGHTS])
    if sorted(names) != expected:
        raise BundleError(f"{where}: 'files' lists {sorted(names)}; a {algo} bundle has exactly {expected}, each "
                          "with its sha256 — re-export it with offline_train.export")
    if not all(isinstance(d, str) and len(d) == 64 for d in meta["files"].values()):
        raise BundleError(f"{where}: every 'files' entry needs a sha256 hex digest; re-export the bundle")


def _json_type(kind: type) -> str:
    return {int: "integer", str: "string", dict: "object", list: "array"}[kind]


def _finite(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def verify_graphs(bundle: Bundle) -> None:
    """Graph input sizes must match the declared dims, and the examples must reproduce."""
    for name in bundle.meta["graphs"]:
        session = ort_session(str(bundle.file(name)))
        for inp in session.get_inputs():
            width = inp.shape[1] if len(inp.shape) > 1 else None
            expected = bundle.obs_dim if inp.name == "observation" else (1 if inp.name == "t" else bundle.act_dim)
            if width != expected:
                raise BundleError(f"{bundle.path}: {GRAPHS[name].file} input '{inp.name}' has width {width}, "
                                  f"{BUNDLE_JSON} declares {expected}; the bundle was assembled from different runs")
        where = f"{bundle.path}/{GRAPHS[name].file}"
        malformed: tuple[type[Exception], ...] = (*ort_errors(), KeyError, TypeError, ValueError, AttributeError)
        try:
            check_parity(session, bundle.meta["examples"][name], where)
        except BundleError:
            raise
        except malformed as exc:
            raise BundleError(f"{where}: the stored examples in {BUNDLE_JSON} do not fit the graph ({exc}); "
                              "re-export the bundle") from None

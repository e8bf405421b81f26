"""Write a run's policy bundle (ONNX + bundle.json), with its calibration if it has one, and
load it back as a robot would (the `export` step; its command is offline_train.export)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from safefql_core.bundle import BundleError, load_bundle
from safefql_core.bundle_export import export_bundle
from safefql_core.decision import DecisionError, DecisionSettings
from safefql_core.pipeline.files import CALIBRATION_FILE
from safefql_core.tasks import TaskSpec, TaskSpecError
from safefql_core.training import RunError, load_run


def task_description(meta: dict) -> dict:
    """What the bundle records about the task: name, period (and action repeat), bounds, field
    names, and the exact task spec the dataset was converted with (`spec`), which the node,
    replay and evaluate deploy the bundle with. Refuses a spec that does not fit the networks."""
    attrs = meta.get("dataset_attrs") or {}
    keys = ("control_period", "action_repeat", "action_low", "action_high", "observation_fields", "action_fields")
    task = {"name": meta["task"], **{k: attrs[k] for k in keys if k in attrs}}
    if attrs.get("task_spec"):
        try:
            spec = TaskSpec.from_dict(attrs["task_spec"], meta["task"])
        except TaskSpecError as exc:
            raise RunError(f"the run's dataset records a task spec that does not load ({exc}); convert the bag "
                           "again with this version of safefql") from None
        if (spec.obs_dim, spec.act_dim) != (meta["obs_dim"], meta["act_dim"]):
            raise RunError(f"the run's dataset records a task spec of {spec.obs_dim} observation / {spec.act_dim} "
                           f"action values, but the run was trained on {meta['obs_dim']} / {meta['act_dim']}")
        task["spec"] = spec.to_dict()
    return task


def export_run(run: str, out: str, seed: int = 0, allow_partial: bool = False) -> dict:
    """Export a run (with its calibration, if any) and verify the result as a robot would."""
    if Path(out).exists() and not Path(out).is_dir():
        raise BundleError(f"--out {out} is a file; a bundle is a directory of several files: give a directory "
                          f"path, e.g. {Path(run) / 'bundle'}")
    learner, meta = load_run(run, allow_partial=allow_partial)
    missing = [key for key in ("obs_min", "obs_max", "margin_range") if key not in meta]
    if missing:
        raise RunError(f"{run} was trained before safefql recorded {missing} in its config.yaml; run the same "
                       "offline_train.fit command again (a finished run only records them), then export")
    cal_file = Path(run) / CALIBRATION_FILE
    try:
        calibration = json.loads(cal_file.read_text()) if cal_file.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{cal_file} cannot be read ({exc}); run offline_train.calibrate again") from None
    rng = np.random.default_rng(seed)
    obs = rng.normal(meta["obs_mean"], meta["obs_std"], (256, meta["obs_dim"])).astype(np.float32)
    doc = export_bundle(learner, meta, Path(out), obs, calibration, task_description(meta),
                        run_decision(meta, calibration, cal_file))
    load_bundle(out)
    return doc


def run_decision(meta: dict, calibration: dict | None, cal_file: Path) -> DecisionSettings:
    """The decision a run's bundle deploys: the one its calibration rolled out (so δ* certifies
    it), else the task's default (`DecisionSettings.for_task`)."""
    entry = (calibration or {}).get("decision")
    if entry is None:
        return DecisionSettings.for_task(meta["task"], meta["act_dim"])
    try:
        return DecisionSettings.from_dict(entry, meta["act_dim"])
    except DecisionError as exc:
        raise RunError(f"{cal_file}: its decision settings are invalid ({exc}); run offline_train.calibrate "
                       "again") from None


def describe(out: str, doc: dict) -> str:
    """The result as `export` and `fit --bag` print it."""
    note = "" if doc["calibration"] else " (uncalibrated: δ* = 0; run offline_train.calibrate first)"
    return (f"wrote bundle {out}: {', '.join(sorted(doc['files']))}; torch/onnxruntime max diff "
            f"{max(doc['export_parity_max_rel_diff'].values()):.2e} (relative to max(1, |value|)){note}")

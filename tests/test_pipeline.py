"""The commands are thin: the pipeline's functions give what the commands give, and neither the
core nor the ROS nodes depend on the command-line package."""
from __future__ import annotations

import ast
import hashlib
from pathlib import Path

from offline_train import fit
from safefql_core.pipeline import calibrate, export
from safefql_core.pipeline.convert import BagOptions, load_spec
from safefql_core.pipeline.files import BUNDLE, CALIBRATION_FILE, DATASET
from safefql_core.pipeline.train import convert_into_run, load_overrides
from safefql_core.training import TrainOptions, train

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function (a lazy import counts)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_neither_the_core_nor_the_nodes_import_the_command_line_package():
    offenders = {str(path.relative_to(ROOT)): sorted(m for m in imported_modules(path)
                                                     if m.split(".")[0] == "offline_train")
                 for package in ("safefql_core", "safefql_ros") for path in (ROOT / package).rglob("*.py")}
    assert {path: mods for path, mods in offenders.items() if mods} == {}


def checksums(run: Path) -> dict[str, str]:
    """sha256 of what a bag's way to a bundle leaves in the run: dataset, δ* and every bundle file."""
    files = [run / DATASET, run / CALIBRATION_FILE, *sorted((run / BUNDLE).iterdir())]
    return {str(f.relative_to(run)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def test_fit_bag_is_the_pipeline_functions_chained(tiny_boat_bag, tmp_path):
    """`fit --bag` and the same steps called as functions, same seed: byte-identical dataset,
    calibration and bundle (the weights, the ONNX graphs, bundle.json). The command adds
    parsing and printing, nothing that changes a number."""
    settings = ["--steps", "20", "--set", "batch_size=64"]
    assert fit.main(["--bag", tiny_boat_bag, "--out", str(tmp_path / "cli"), "--seed", "3", "--no-progress",
                     "--calibration-n", "200", *settings]) == 0

    run = tmp_path / "functions"
    task, overrides = load_overrides(None, "safefql")
    opts = TrainOptions(data=None, out=str(run), seed=3, overrides={**overrides, "steps": 20, "batch_size": 64},
                        task=task, progress=False)
    opts.data = convert_into_run([tiny_boat_bag], load_spec(None), BagOptions(), opts)
    out = train(opts)
    calibrate.calibrate_run(str(out), n=200, source="auto", seed=3)
    export.export_run(str(out), str(run / BUNDLE), 3)

    assert checksums(run) == checksums(tmp_path / "cli")

"""Mistakes a newcomer makes are refused before the work, not after it (issue 33).

Each case runs the real command on a tiny run or bundle and checks three things: the exit
status, a message that names the problem and the fix (no traceback), and that nothing was
spent or written first — or, where the command can mend the mistake itself (a missing output
folder), that it does and says where it wrote.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from offline_train import benchmark, calibrate, evaluate, export, reference
from safefql_core.pipeline.files import CALIBRATION_FILE
from safefql_core.training import TrainOptions, train
from safefql_ros import launcher

TINY = {"critic_hidden": [32, 32], "flow_hidden": [32, 32], "batch_size": 64, "flow_steps": 3}


class Stopped(Exception):
    """Stands for a fit that is killed (Ctrl-C, a lost session) partway."""


@pytest.fixture(scope="module")
def run(tiny_boat_h5, tmp_path_factory) -> str:
    """A finished 20-step run of our own (calibrating it must not touch the shared bundle's)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(TrainOptions(data=tiny_boat_h5, out=str(out), overrides={**TINY, "steps": 20}, progress=False))
    return str(out)


@pytest.fixture(scope="module")
def partial_run(tiny_boat_h5, tmp_path_factory) -> str:
    """A run stopped after its step-10 checkpoint, 20 steps planned: what `fit` leaves on disk
    while it still runs, or after it was killed."""
    out = tmp_path_factory.mktemp("partial") / "run"

    def stop_at_15(learner):
        raise Stopped

    with pytest.raises(Stopped):
        train(TrainOptions(data=tiny_boat_h5, out=str(out), overrides={**TINY, "steps": 20}, progress=False,
                           checkpoint_every=10, eval_every=15, evaluator=stop_at_15))
    return str(out)


def error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_evaluate_plot_into_a_missing_folder_creates_it_and_says_so(run, tmp_path, capsys):
    plot, summary = tmp_path / "new" / "deeper" / "map.png", tmp_path / "other" / "eval.json"
    assert evaluate.main(["--run", run, "--episodes", "3", "--steps", "20", "--plot", str(plot),
                          "--json", str(summary)]) == 0
    out = capsys.readouterr().out
    assert plot.is_file() and summary.is_file()
    assert f"wrote {plot}" in out and f"wrote {summary}" in out


def test_evaluate_json_onto_a_directory_is_refused_before_evaluating(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(evaluate.evaluation, "rollout", lambda *a, **k: pytest.fail("evaluated anyway"))
    assert evaluate.main(["--run", run, "--episodes", "3", "--json", str(tmp_path)]) == 2
    assert f"--json {tmp_path} is a directory" in error(capsys)


def test_export_out_onto_a_file_is_refused(run, tmp_path, capsys):
    target = tmp_path / "bundle.onnx"
    target.write_text("keep me")
    assert export.main(["--run", run, "--out", str(target)]) == 2
    assert f"--out {target} is a file; a bundle is a directory" in error(capsys)
    assert target.read_text() == "keep me"


def test_reference_init_states_of_the_wrong_kind_are_refused(tiny_boat_h5, tmp_path, capsys):
    assert reference.main(["--task", "boat", "--init-states", tiny_boat_h5]) == 2
    assert f"--init-states {tiny_boat_h5}: not a .npy array" in error(capsys)
    wrong = tmp_path / "xyz.npy"
    np.save(wrong, np.zeros((4, 3)))
    assert reference.main(["--task", "boat", "--init-states", str(wrong)]) == 2
    assert "expected a non-empty (N, 2) array of finite real x, y states, got shape (4, 3)" in error(capsys)
    assert reference.main(["--task", "boat", "--init-states", str(tmp_path / "missing.npy")]) == 2
    assert "no such file" in error(capsys)


@pytest.mark.parametrize("command", ["evaluate", "export", "calibrate"])
def test_an_unfinished_run_is_refused_unless_allowed(partial_run, tmp_path, capsys, command):
    argv = {"evaluate": ["--run", partial_run, "--episodes", "2", "--steps", "10"],
            "export": ["--run", partial_run, "--out", str(tmp_path / "bundle")],
            "calibrate": ["--run", partial_run, "--n", "10", "--plot", str(tmp_path / "scores.png")]}[command]
    main = {"evaluate": evaluate.main, "export": export.main, "calibrate": calibrate.main}[command]
    assert main(argv) == 2
    assert "has trained 10 of its 20 steps: its fit is still running, or was stopped" in error(capsys)
    assert not (tmp_path / "bundle").exists() and not (tmp_path / "scores.png").exists()
    assert main([*argv, "--allow-partial"]) == 0


@pytest.mark.parametrize("flag,value,message", [
    ("--epsilon", "5", "--epsilon is the allowed violation probability, in (0, 1)"),
    ("--epsilon", "0", "--epsilon is the allowed violation probability, in (0, 1)"),
    ("--beta", "1.5", "--beta is 1 - the confidence, in (0, 1)"),
    ("--n", "0", "--n must be at least 1"),
])
def test_calibrate_refuses_settings_out_of_range(run, capsys, flag, value, message):
    before = sorted(p.name for p in Path(run).iterdir())
    assert calibrate.main(["--run", run, flag, value]) == 2
    assert message in error(capsys)
    assert sorted(p.name for p in Path(run).iterdir()) == before


def test_a_new_calibration_says_what_it_replaces(run, tmp_path, capsys):
    plot = tmp_path / "scores.png"
    assert calibrate.main(["--run", run, "--n", "20", "--plot", str(plot)]) == 0
    first = capsys.readouterr().out
    old = json.loads((Path(run) / CALIBRATION_FILE).read_text())
    assert calibrate.main(["--run", run, "--n", "20", "--epsilon", "0.2", "--plot", str(plot)]) == 0
    second = capsys.readouterr().out
    note = f"replacing the previous calibration in {Path(run) / CALIBRATION_FILE} (δ* = {old['delta']:.4f}"
    assert note not in first and note in second
    assert f"wrote {Path(run) / CALIBRATION_FILE} and {plot}" in second


def test_launch_with_a_bad_bundle_fails_before_any_node(tmp_path, capsys):
    assert launcher.main(["boat", "--bundle", str(tmp_path), "--duration", "1"]) == 2
    err = error(capsys)
    assert f"{tmp_path} is not a policy bundle" in err and "started" not in err


def test_launch_replay_refuses_a_missing_bag_before_writing_an_output(bundle, tmp_path, capsys):
    output = tmp_path / "replayed"
    assert launcher.main(["replay", "--bundle", bundle, "--bag", str(tmp_path / "no_bag"),
                          "--output", str(output)]) == 2
    err = error(capsys)
    assert "is not a rosbag2 directory (no metadata.yaml)" in err and "started" not in err
    assert not output.exists()


def test_launch_replay_refuses_an_existing_output_in_one_line(bundle, tmp_path, capsys):
    bag, output = tmp_path / "bag", tmp_path / "replayed"
    bag.mkdir()
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    output.mkdir()
    assert launcher.main(["replay", "--bundle", bundle, "--bag", str(bag), "--output", str(output)]) == 2
    err = error(capsys)
    assert f"output {output} already exists; a bag is never overwritten" in err
    assert "KeyboardInterrupt" not in err and "started" not in err


def test_benchmark_announces_the_dataset_it_generates(tmp_path, capfd):
    path = tmp_path / "data.h5"
    benchmark.ensure_data(str(path), "boat", 800)
    out, err = capfd.readouterr()
    assert f"generating the standard boat dataset (800 transitions) into {path}" in out
    assert "episode" in err and "%" in err   # collect's progress bar
    assert path.is_file()


def test_safety_gymnasium_import_prints_no_adroit_notice():
    if importlib.util.find_spec("safety_gymnasium") is None:  # importorskip would import it without the shim
        pytest.skip("safety-gymnasium is not installed")
    probe = ("from safefql_core.envs.safety_gym import make_env\n"
             "make_env('SafetyPointCircle1-v0', 0, None).close()\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "AdroitHand" not in done.stderr


def test_ray_notices_stay_out_of_the_benchmark_output(monkeypatch):
    """Ray's token-authentication notice is dropped (authentication itself stays on) and the
    cells' lines come without colour codes, unless the user asks for them."""
    setup = pytest.importorskip("ray._private.authentication.authentication_token_setup")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # what Ray's notice reaches, whatever else configured logging before
    level = setup.logger.level
    setup.logger.setLevel(logging.NOTSET)  # as Ray leaves it (setLevel also clears the logger's cache)
    setup.logger.addHandler(handler)
    try:
        setup._warn_token_auth_enabled()
        assert any("Token authentication is enabled" in r.getMessage() for r in records)  # Ray's default
        records.clear()
        monkeypatch.delenv("RAY_COLOR_PREFIX", raising=False)
        benchmark.quiet_ray()
        setup._warn_token_auth_enabled()
        assert not records
    finally:
        setup.logger.removeHandler(handler)
        setup.logger.setLevel(level)
    assert os.environ["RAY_COLOR_PREFIX"] == "0"
    monkeypatch.setenv("RAY_COLOR_PREFIX", "1")
    benchmark.quiet_ray()
    assert os.environ["RAY_COLOR_PREFIX"] == "1"


def test_a_node_interrupted_while_it_starts_exits_without_a_traceback():
    """The launcher stops the other nodes when one fails, often while they still import: the
    state runpy leaves while it imports the package of `python -m safefql_ros.<node>`
    (sys.argv[0] == "-m"), then SIGINT before the node's own handling is in place."""
    probe = ("import os, signal, sys, time\n"
             "sys.argv[0] = '-m'\n"
             "import safefql_ros\n"
             "os.kill(os.getpid(), signal.SIGINT)\n"
             "time.sleep(30)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr

"""The training loop refuses to produce a run it cannot trust: non-finite statistics or losses,
and (below) interrupted, resumed or truncated runs keep a consistent record."""
from __future__ import annotations

import numpy as np
import pytest

from safefql_core.data import DatasetError, load_dataset, save_dataset
from safefql_core.training import CHECKPOINT, RunError, TrainOptions, train

TINY = {"critic_hidden": [32, 32], "flow_hidden": [32, 32], "batch_size": 64, "flow_steps": 3}


def _train(data, out, steps, **extra):
    return train(TrainOptions(data=str(data), out=str(out), overrides={**TINY, "steps": steps, **extra},
                              progress=False, log_every=10, checkpoint_every=10))


def _rewritten(tiny_boat_h5, tmp_path, **arrays):
    data = load_dataset(tiny_boat_h5)
    for key, value in arrays.items():
        setattr(data, key, value(getattr(data, key)))
    path = tmp_path / "data.h5"
    save_dataset(path, data)
    return path


def test_observations_too_large_to_normalise_are_refused(tiny_boat_h5, tmp_path):
    data = _rewritten(tiny_boat_h5, tmp_path, observations=lambda o: o * np.float32(1e37))
    with pytest.raises(DatasetError, match="mean or standard deviation is not finite"):
        _train(data, tmp_path / "run", 10)
    assert not (tmp_path / "run" / CHECKPOINT).exists()


def test_a_non_finite_loss_stops_training_without_a_checkpoint(tiny_boat_h5, tmp_path):
    """Rewards of 1e30 are finite, but their squared TD error overflows float32 at step 1."""
    data = _rewritten(tiny_boat_h5, tmp_path, rewards=lambda r: r * np.float32(1e30))
    with pytest.raises(RunError, match="training diverged between steps 0 and 10: .* = (inf|nan)"):
        _train(data, tmp_path / "run", 10)
    assert not (tmp_path / "run" / CHECKPOINT).exists()


def test_data_of_another_width_than_its_task_is_refused(tiny_boat_h5, tmp_path):
    """3-D observations labelled as boat data used to train and export, then crash calibration."""
    data = _rewritten(tiny_boat_h5, tmp_path, observations=lambda o: np.c_[o, o[:, :1]],
                      next_observations=lambda o: np.c_[o, o[:, :1]])
    with pytest.raises(RunError, match="has 3-D observations .* task 'boat' reads 2 state values"):
        _train(data, tmp_path / "run", 10)
    assert not (tmp_path / "run").exists()


# ---- a run directory stays consistent: staged conversion, damaged files -------------------------
@pytest.fixture(scope="module")
def two_bags(tmp_path_factory):
    """Two one-episode boat bags of different seeds (different data)."""
    from offline_train import collect
    root = tmp_path_factory.mktemp("bags")
    for seed in (1, 2):
        assert collect.main(["--seed", str(seed), "--episodes", "1", "--format", "bag", "--no-progress",
                             "--out", str(root / f"bag{seed}")]) == 0
    return root / "bag1", root / "bag2"


def _fit_bag(bag, run, capsys):
    from offline_train import fit
    code = fit.main(["--bag", str(bag), "--out", str(run), "--algo", "bc", "--steps", "10", "--no-progress",
                     "--set", "hidden=[16,16]", "batch_size=32"])
    return code, capsys.readouterr().err


def test_fit_bag_refusing_to_resume_leaves_the_runs_dataset_alone(two_bags, tmp_path, capsys):
    run = tmp_path / "run"
    assert _fit_bag(two_bags[0], run, capsys)[0] == 0
    before = (run / "dataset.h5").read_bytes()
    code, err = _fit_bag(two_bags[1], run, capsys)
    assert code == 2 and "holds a run with a different dataset_fingerprint" in err
    assert (run / "dataset.h5").read_bytes() == before
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.yaml", "dataset.h5", "metrics.csv"]


@pytest.mark.parametrize("damaged, keep", [("checkpoint.pt", 100), ("config.yaml", 40)])
def test_a_truncated_checkpoint_or_config_is_a_clear_error(tiny_boat_h5, tmp_path, damaged, keep):
    from safefql_core.training import load_run
    run = _train(tiny_boat_h5, tmp_path / "run", 10)
    path = run / damaged
    path.write_bytes(path.read_bytes()[:keep])
    for action in (lambda: load_run(run), lambda: _train(tiny_boat_h5, run, 20)):
        with pytest.raises(RunError, match=f"{damaged} (cannot be read|is truncated)"):
            action()


# ---- interruptions: a crash after a log row, SIGINT --------------------------------------------
def test_a_resumed_run_logs_each_step_once(tiny_boat_h5, tmp_path):
    """An evaluator that fails at step 3 ends the run after row 3 was logged but before its
    checkpoint (the last one is at 2): the resumed run trains step 3 again and must not log
    row 3 twice."""
    import csv

    def failing(_learner):
        raise KeyboardInterrupt  # what a Ctrl-C during an evaluation looks like to the loop

    opts = dict(data=tiny_boat_h5, out=str(tmp_path / "run"), overrides={**TINY, "steps": 4}, progress=False,
                log_every=1, checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        train(TrainOptions(**opts, eval_every=3, evaluator=failing))
    train(TrainOptions(**opts))
    with (tmp_path / "run" / "metrics.csv").open() as f:
        steps = [int(row["step"]) for row in csv.DictReader(f)]
    assert steps == [1, 2, 3, 4]


def test_sigint_saves_a_checkpoint_and_the_run_resumes(tiny_boat_h5, tmp_path):
    import csv
    import signal
    import subprocess
    import sys
    import time

    import torch
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "offline_train.fit", "--data", tiny_boat_h5, "--out", str(run), "--no-progress",
           "--log-every", "5", "--set", "critic_hidden=[16,16]", "flow_hidden=[16,16]", "batch_size=16", "flow_steps=2"]
    proc = subprocess.Popen([*cmd, "--steps", "1000000"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "metrics.csv").exists() or len((run / "metrics.csv").read_text().splitlines()) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "no metrics row logged"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted at step" in err and "Traceback" not in err
    step = torch.load(run / "checkpoint.pt", weights_only=True)["step"]
    assert 5 <= step < 1_000_000
    assert subprocess.run([*cmd, "--steps", str(step + 20)], capture_output=True, timeout=120).returncode == 0
    with (run / "metrics.csv").open() as f:
        steps = [int(row["step"]) for row in csv.DictReader(f)]
    assert steps == sorted(set(steps)) and steps[-1] == step + 20


def test_a_failed_config_write_leaves_the_previous_config_whole(tiny_boat_h5, tmp_path, monkeypatch):
    """A write that dies half-way (disk full, a kill) must not leave half a config.yaml."""
    from pathlib import Path
    run = _train(tiny_boat_h5, tmp_path / "run", 2)
    before = (run / "config.yaml").read_text()
    real_write = Path.write_text

    def half_then_fail(self, text, *args, **kwargs):
        real_write(self, text[:len(text) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    with pytest.raises(RunError, match="cannot write .*config.yaml .*No space left"):
        _train(tiny_boat_h5, run, 4)
    monkeypatch.undo()
    assert (run / "config.yaml").read_text() == before
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.yaml", "metrics.csv"]

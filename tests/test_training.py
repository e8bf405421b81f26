"""Training: determinism for a seed, resume == uninterrupted, refusal to mix runs, end to end."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from safefql_core.agent import SafeFQLConfig
from safefql_core.data import Dataset, DatasetError, load_dataset, violation_free_episodes
from safefql_core.training import RunError, TrainOptions, load_run, resolve_config, train

TINY = {"critic_hidden": [32, 32], "flow_hidden": [32, 32], "batch_size": 64, "flow_steps": 3}


def _train(data, out, steps, seed=0, algo="safefql", **extra):
    cfg = {**(TINY if algo == "safefql" else {"hidden": [32, 32], "batch_size": 64}), "steps": steps, **extra}
    return train(TrainOptions(data=data, out=str(out), algo=algo, seed=seed, overrides=cfg,
                              progress=False, log_every=10, checkpoint_every=20))


def _weights(run):
    learner, _ = load_run(run)
    return learner.state_dict()


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def _metrics(run):
    """metrics.csv without its wall-clock column."""
    rows = [r.split(",") for r in (run / "metrics.csv").read_text().strip().splitlines()]
    return [r[:1] + r[2:] for r in rows]


def test_same_seed_same_weights_other_seed_differs(tiny_boat_h5, tmp_path):
    runs = [_train(tiny_boat_h5, tmp_path / name, 30, seed=seed) for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    a, b, c = (_weights(run) for run in runs)
    assert _same(a, b)
    assert _metrics(runs[0]) == _metrics(runs[1]) and len(_metrics(runs[0])) == 4  # header + 3 rows
    assert not _same(a, c)


@pytest.mark.parametrize("algo", ["safefql", "fisor"])
def test_learning_curve_does_not_change_training(tiny_boat_h5, tmp_path, algo):
    from safefql_core.envs import boat
    from safefql_core.evaluation import learning_curve_evaluator
    states = boat.evaluation_states()[:8]
    evaluator = learning_curve_evaluator(states, np.ones(len(states), bool))
    cfg = {"critic_hidden": [16], "batch_size": 32, "steps": 20,
           **({"flow_hidden": [16], "flow_steps": 2} if algo == "safefql" else {"denoiser_hidden": [16]})}
    runs = {}
    for name, every in (("plain", 0), ("curve", 10)):
        runs[name] = train(TrainOptions(data=tiny_boat_h5, out=str(tmp_path / name), algo=algo, overrides=cfg,
                                        progress=False, eval_every=every, evaluator=evaluator))
    assert _same(_weights(runs["plain"]), _weights(runs["curve"]))
    rows = (runs["curve"] / "eval.csv").read_text().strip().splitlines()
    assert rows[0] == "step,return,zero_violation,violations" and [r.split(",")[0] for r in rows[1:]] == ["10", "20"]
    assert not (runs["plain"] / "eval.csv").exists()
    from safefql_core.evaluation import plot_learning_curve
    plot_learning_curve(runs["curve"] / "eval.csv", tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_equals_uninterrupted(tiny_boat_h5, tmp_path):
    straight = _weights(_train(tiny_boat_h5, tmp_path / "s", 40))
    _train(tiny_boat_h5, tmp_path / "r", 20)
    resumed = _weights(_train(tiny_boat_h5, tmp_path / "r", 40))
    assert _same(straight, resumed)
    rows = (tmp_path / "r" / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].startswith("step,seconds,loss_v") and len(rows) == 1 + 4  # one header, 4 log rows


def test_resume_refuses_a_different_experiment(tiny_boat_h5, tmp_path):
    _train(tiny_boat_h5, tmp_path / "x", 10)
    with pytest.raises(RunError, match="different config"):
        _train(tiny_boat_h5, tmp_path / "x", 10, alpha=5.0)


def test_unknown_config_key_is_refused(tiny_boat_h5, tmp_path):
    with pytest.raises(ValueError, match="unknown SafeFQLConfig key"):
        _train(tiny_boat_h5, tmp_path / "y", 10, alhpa=5.0)


def test_phased_schedule_trains_each_part_in_its_phase(tiny_boat_h5, tmp_path):
    run = _train(tiny_boat_h5, tmp_path / "p", 30, schedule="phased", phases=[0.34, 0.67])
    rows = [r.split(",") for r in (run / "metrics.csv").read_text().strip().splitlines()]
    header = rows[0]
    col = {name: header.index(name) for name in ("loss_q", "loss_flow", "loss_actor")}
    first, last = rows[1], rows[-1]          # step 10 (critics), step 30 (actor)
    assert first[col["loss_q"]] and not first[col["loss_flow"]] and not first[col["loss_actor"]]
    assert last[col["loss_actor"]] and not last[col["loss_q"]]


def test_bc_learns_a_state_dependent_policy(tiny_boat_h5, tmp_path):
    """BC's squared error ends below that of the best constant action (the actions' total
    variance): it learned something of the state, not just the mean action."""
    run = _train(tiny_boat_h5, tmp_path / "bc", 200, algo="bc")
    losses = [float(r.split(",")[2]) for r in (run / "metrics.csv").read_text().strip().splitlines()[1:]]
    constant_action_loss = load_dataset(tiny_boat_h5).actions.var(axis=0).sum()
    assert losses[-1] < min(losses[0], 0.9 * constant_action_loss)


def test_checkpoint_is_plain_state_dicts(tiny_boat_h5, tmp_path):
    run = _train(tiny_boat_h5, tmp_path / "w", 10)
    state = torch.load(run / "checkpoint.pt", weights_only=True)  # raises on pickled objects
    assert state["step"] == 10 and "model" in state and "optimizer" in state


def _cli(*args, cwd):
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.slow
def test_collect_fit_evaluate_end_to_end(tmp_path):
    _cli("offline_train.collect", "--task", "boat", "--seed", "1", "--episodes", "20",
         "--out", "data.h5", "--no-progress", cwd=tmp_path)
    _cli("offline_train.fit", "--data", "data.h5", "--out", "run", "--seed", "0", "--steps", "300",
         "--no-progress", "--set", "critic_hidden=[64,64]", "flow_hidden=[64,64]", "batch_size=128",
         cwd=tmp_path)
    proc = _cli("offline_train.evaluate", "--run", "run", "--episodes", "6", "--json", "eval.json",
                "--plot", "map.png", cwd=tmp_path)
    summary = json.loads((tmp_path / "eval.json").read_text())
    assert summary["count"] == 6 and summary["algo"] == "safefql"
    assert -4.5 * 400 < summary["mean_return"] < 0
    assert 0 <= summary["zero_violation_rate"] <= 1
    assert summary["feasible"]["count"] + summary["doomed"]["count"] == 6
    assert "mean return" in proc.stdout
    assert (tmp_path / "map.png").stat().st_size > 10_000
    lines = (tmp_path / "run" / "metrics.csv").read_text().strip().splitlines()
    assert lines[-1].startswith("300,")


def test_evaluate_scores_the_test_set_by_default_and_says_which(tiny_boat_h5, tmp_path, capsys):
    from offline_train import evaluate
    from safefql_core.envs import boat
    from safefql_core.evaluation import rollout, torch_policy
    run = _train(tiny_boat_h5, tmp_path / "e", 10)
    learner = load_run(str(run))[0]
    for choice in ("", "validation", "evaluation"):
        out = tmp_path / f"{choice or 'default'}.json"
        starts = ["--init-states", choice] if choice else []
        assert evaluate.main(["--run", str(run), "--episodes", "3", "--steps", "20", "--json", str(out), *starts]) == 0
        summary = json.loads(out.read_text())
        name = choice or "test"
        assert summary["init_states"] == name and f"from --init-states {name}" in capsys.readouterr().out
        direct = rollout(torch_policy(learner), boat.initial_states(name)[:3], steps=20)
        assert summary["mean_return"] == pytest.approx(float(direct["returns"].mean()))
    assert evaluate.main(["--run", str(run), "--init-states", "train"]) == 2
    assert "--init-states train: no such file; give a named set (validation, test, evaluation)" in \
        capsys.readouterr().err
    assert evaluate.main(["--run", str(run), "--init-states", "validation", "--episodes", "501"]) == 2
    assert "exceeds the 500 states of --init-states validation" in capsys.readouterr().err


def test_fit_cli_reports_bad_data_clearly(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "offline_train.fit", "--data", str(tmp_path / "no.h5"),
                           "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "offline_train.collect" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_evaluate_cli_reports_missing_run(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "offline_train.evaluate", "--run", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "is not a trained run" in proc.stderr


@pytest.mark.parametrize("extra, message", [
    (["--set", "alpha"], "--set expects KEY=VALUE, got 'alpha'"),     # not a silent alpha=None
    (["--threads", "0"], "--threads must be at least 1, got 0"),
])
def test_fit_refuses_a_malformed_flag_before_training(tiny_boat_h5, tmp_path, capsys, extra, message):
    from offline_train import fit
    assert fit.main(["--data", tiny_boat_h5, "--out", str(tmp_path / "run"), "--no-progress", *extra]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "run").exists()


# ---- the algo registry: variants are overrides and data filters on the same learners ----------
@pytest.mark.parametrize("algo, learner, key, value", [
    ("safefql-lagrangian", "safefql", "actor_loss", "lagrangian"),
    ("safefql-nodistill", "safefql", "alpha", 0.0),
    ("safefql-paperbackup", "safefql", "safety_backup", "paper"),
    ("bc-safe", "bc", "hidden", [32, 32]),
])
def test_fit_trains_each_variant_and_records_it(tiny_boat_h5, tmp_path, algo, learner, key, value):
    from offline_train import fit
    tiny = TINY if learner == "safefql" else {"hidden": [32, 32], "batch_size": 64}
    repeated = [arg for k, v in tiny.items() for arg in ("--set", f"{k}={json.dumps(v)}")]
    out = tmp_path / algo
    assert fit.main(["--data", tiny_boat_h5, "--out", str(out), "--algo", algo, "--steps", "5",
                     "--no-progress", *repeated]) == 0
    meta = yaml.safe_load((out / "config.yaml").read_text())
    assert meta["variant"] == algo and meta["algo"] == learner
    assert all(meta["config"][k] == v for k, v in tiny.items())   # each repeated --set counts
    assert meta["config"][key] == value and meta["config"]["steps"] == 5
    learner_obj, loaded = load_run(out)   # rebuilt through the learner's name, as export does
    assert loaded["trained_steps"] == 5
    assert type(learner_obj).__name__ == {"safefql": "SafeFQL", "bc": "BC"}[learner]
    if algo == "bc-safe":
        assert meta["dataset_filter"] == "violation_free_episodes"
        assert 0 < meta["transitions"] < 4800   # the tiny dataset has violating episodes
    else:
        assert meta["dataset_filter"] is None and meta["transitions"] == 4800


def test_variant_defaults_apply_and_contradictions_are_refused():
    assert resolve_config("safefql-nodistill", {"steps": 7}) == {**SafeFQLConfig().to_dict(), "alpha": 0.0, "steps": 7}
    assert resolve_config("safefql-nodistill", {"alpha": 0.0})["alpha"] == 0.0  # restating it is fine
    with pytest.raises(RunError, match="contradict"):
        resolve_config("safefql-nodistill", {"alpha": 3.0})
    assert resolve_config("safefql") == SafeFQLConfig().to_dict()   # the default algo is untouched


def test_run_written_before_new_keys_still_resumes(tiny_boat_h5, tmp_path):
    run = _train(tiny_boat_h5, tmp_path / "old", 10)
    meta = yaml.safe_load((run / "config.yaml").read_text())
    del meta["variant"], meta["config"]["actor_loss"], meta["config"]["lagrangian_eta"]
    (run / "config.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    _train(tiny_boat_h5, run, 20)  # would raise RunError if the old run looked like another experiment
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 20


def test_run_from_before_n_step_counts_as_one_step(tiny_boat_h5, tmp_path):
    run = _train(tiny_boat_h5, tmp_path / "old", 10, n_step=1)
    meta = yaml.safe_load((run / "config.yaml").read_text())
    del meta["config"]["n_step"]   # written before the key existed: trained with one-step targets
    (run / "config.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    assert load_run(run)[1]["config"]["n_step"] == 1
    with pytest.raises(RunError, match="different config"):
        _train(tiny_boat_h5, run, 20)            # today's default (10) would mix two experiments
    _train(tiny_boat_h5, run, 20, n_step=1)


def _episodes(costs, terminals, timeouts) -> Dataset:
    n = len(costs)
    obs = np.arange(n, dtype=np.float32)[:, None].repeat(2, axis=1)
    f = lambda v: np.asarray(v, np.float32)  # noqa: E731
    return Dataset(observations=obs, next_observations=obs + 1, actions=np.zeros((n, 2), np.float32),
                   rewards=-obs[:, 0], costs=f(costs), terminals=f(terminals), timeouts=f(timeouts),
                   margins=f(costs) - 0.5, attrs={"task": "boat"})


def test_violation_free_episodes_keeps_whole_safe_episodes():
    # episodes [0 1 2] (time-out) | [3 4] (terminal; row 3 violates) | [5 6 7] (no end flag)
    data = _episodes(costs=[0, 0, 0, 1, 0, 0, 0, 0], terminals=[0, 0, 0, 0, 1, 0, 0, 0],
                     timeouts=[0, 0, 1, 0, 0, 0, 0, 0])
    kept = violation_free_episodes(data)
    assert kept.observations[:, 0].tolist() == [0, 1, 2, 5, 6, 7]
    assert kept.rewards.tolist() == [0, -1, -2, -5, -6, -7] and kept.margins.tolist() == [-0.5] * 6
    assert kept.timeouts.tolist() == [0, 0, 1, 0, 0, 0] and kept.attrs == {"task": "boat"}
    # a violation in the last step of an episode drops the whole episode too
    data = _episodes(costs=[0, 0, 1, 0, 0], terminals=[0] * 5, timeouts=[0, 0, 1, 0, 1])
    assert violation_free_episodes(data).observations[:, 0].tolist() == [3, 4]


def test_violation_free_episodes_refuses_an_all_violating_dataset():
    data = _episodes(costs=[1, 0, 0, 1], terminals=[0] * 4, timeouts=[0, 1, 0, 1])
    with pytest.raises(DatasetError, match="none of the dataset's 2 episodes is free of violations"):
        violation_free_episodes(data)


def test_eval_every_without_an_evaluator_is_a_clear_error(tiny_boat_h5, tmp_path):
    with pytest.raises(RunError, match="needs an evaluator"):
        train(TrainOptions(data=tiny_boat_h5, out=str(tmp_path / "run"), algo="bc", eval_every=5, progress=False))
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_speed_train_reports_throughput_and_phases(tmp_path, capsys):
    from offline_train import speed
    out = tmp_path / "speed.json"
    assert speed.main(["train", "--episodes", "2", "--set", "critic_hidden=[16]", "flow_hidden=[16]",
                       "batch_size=32", "--chunks", "2", "--per-chunk", "2", "--warmup", "1",
                       "--profile-steps", "2", "--json", str(out)]) == 0
    run = json.loads(out.read_text())["runs"][0]
    assert run["sizes"] == "boat" and run["config"]["critic_hidden"] == [16] and run["config"]["n_step"] == 10
    eager = run["eager"]
    assert len(eager["chunk_ms"]) == 2 and eager["steps_per_s"] == pytest.approx(1e3 / eager["ms_per_update"], rel=0.01)
    assert {"critic_forward", "teacher_rollout", "actor_forward", "backward", "optimizer"} <= set(eager["phases"])
    assert "ms/update" in capsys.readouterr().out


# Page faults of 20 boat-size SafeFQL updates in a fresh process, with or without keep_freed_memory.
_UPDATE_FAULTS = """
import resource, sys, torch
from safefql_core.data import Dataset, TensorBatches
from safefql_core.envs import boat_behaviour
from safefql_core.throughput import keep_freed_memory
from safefql_core.training import build_learner, resolve_config
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.set_num_threads(1)
arrays = boat_behaviour.collect(2, seed=0, progress=False)
arrays.pop("family")
data = Dataset(**arrays, attrs={"task": "boat"})
learner = build_learner("safefql", resolve_config("safefql"), 2, 2, data.observations.mean(0), data.observations.std(0))
batches = TensorBatches(data, torch.device("cpu"), 0, horizon=learner.cfg.n_step)
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for step in range(30):
    if step == 10:
        before = faults()
    learner.update(batches.sample(learner.cfg.batch_size), step)
print(faults() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_keep_freed_memory_stops_most_page_faults_of_an_update():
    """Without it, glibc maps many freed activations afresh and each update faults their pages
    in again (safefql_core.throughput.keep_freed_memory); with it they are reused."""
    def faults(mode: str) -> int:
        run = subprocess.run([sys.executable, "-c", _UPDATE_FAULTS, mode], capture_output=True, text=True, check=True)
        return int(run.stdout)
    plain, kept = faults("plain"), faults("keep")
    assert kept * 4 < plain, f"page faults in 20 updates: {plain} plain, {kept} with keep_freed_memory"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a CPU-only machine gives")
def test_speed_train_cuda_graph_on_a_cpu_only_machine_is_a_clear_error(capsys):
    from offline_train import speed
    assert speed.main(["train", "--cuda-graph", "on"]) == 2
    assert "--cuda-graph captures the update on a CUDA device; pass --device cuda" in capsys.readouterr().err
    assert speed.main(["train", "--device", "cuda", "--cuda-graph", "on"]) == 2
    assert "torch sees no CUDA device" in capsys.readouterr().err

"""The benchmark suite end to end on an embedded Ray: tables, figure, resume, failed cells.

One Ray (2 CPUs) for the whole module — its start-up costs ~10 s on these machines — and
one small suite run shared by the tests that read its outputs: two methods that train
(bc without a bundle, the safefql-nodistill ablation with one) and a third whose cells
fail by input (an unknown config key), two seeds each, a few dozen steps, tiny networks.
"""
import csv
import json
import shutil

import numpy as np
import pytest

from offline_train import benchmark
from safefql_core.training import RunError

ray = pytest.importorskip("ray")

METHODS = ["bc", "safefql-nodistill", "safefql-paperbackup"]
TINY = ["batch_size=64", "hidden=[32,32]", "critic_hidden=[32,32]", "flow_hidden=[32,32]", "flow_steps=3"]


def _args(data, out, *extra):
    return ["--out", str(out), "--data", data, "--methods", *METHODS, "--seeds", "2", "--steps", "30",
            "--set", *TINY, "--set", "safefql-paperbackup:no_such_key=1", "--episodes", "3",  # repeatable
            "--latency-calls", "100", "--no-progress", *extra]


@pytest.fixture(scope="module")
def embedded_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def suite(embedded_ray, tiny_boat_h5, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    code = benchmark.main(_args(tiny_boat_h5, out))
    return out, code


def _rows(out):
    with (out / "table.csv").open() as f:
        return {row["method"]: row for row in csv.DictReader(f)}


def test_table_has_one_row_per_method_with_stds(suite):
    out, code = suite
    assert code == 1  # a cell failed: reported in the exit status, the others still finished
    rows = _rows(out)
    assert list(rows) == [*METHODS, "dp-reference"]
    header = set(next(iter(rows.values())))
    for col in ("mean_return", "mean_violations", "zero_violation_rate", "train_seconds", "latency_median_us"):
        assert {col, f"{col}_std"} <= header
    assert rows["bc"]["seeds"] == "2" and rows["bc"]["failed"] == "0"
    assert rows["bc"]["latency_median_us"] == ""          # BC has no deployable decision
    assert float(rows["safefql-nodistill"]["latency_median_us"]) > 0
    # the row is the mean and sample std of the cells' feasible-state numbers
    values = [json.loads((out / "cells" / f"safefql-nodistill-s{s}" / "result.json").read_text())
              ["evaluation"]["feasible"]["mean_return"] for s in (0, 1)]
    assert float(rows["safefql-nodistill"]["mean_return"]) == pytest.approx(np.mean(values))
    assert float(rows["safefql-nodistill"]["mean_return_std"]) == pytest.approx(np.std(values, ddof=1))
    assert -4.5 * 400 < float(rows["bc"]["mean_return"]) < 0
    assert 0 <= float(rows["bc"]["zero_violation_rate"]) <= 1
    table = (out / "table.md").read_text()
    assert "| safefql-nodistill | 2 | 0 |" in table and " ± " in table
    assert (out / "benchmark.png").stat().st_size > 10_000


def test_suite_scores_the_validation_starts_beside_the_dp_reference(suite):
    from safefql_core.envs import boat
    from safefql_core.envs.boat_reference import summarise
    out, _ = suite
    rows = _rows(out)
    assert {row["init_states"] for row in rows.values()} == {"validation"}
    result = json.loads((out / "cells" / "bc-s0" / "result.json").read_text())
    assert result["settings"]["init_states"] == "validation" and result["evaluation"]["init_states"] == "validation"
    assert json.loads((out / "run.json").read_text())["init_states"] == "validation"
    assert "the `validation` set" in (out / "table.md").read_text()
    expected = summarise(boat.initial_states("validation")[:3])   # the cells' --episodes 3
    ref = rows["dp-reference"]
    assert float(ref["mean_return"]) == pytest.approx(expected["mean_optimal_return_feasible"])
    assert int(ref["episodes"]) == expected["count"] - expected["doomed_count"]
    assert float(ref["mean_violations"]) == 0 and float(ref["zero_violation_rate"]) == 1


def test_failed_cells_are_reported_not_fatal(suite):
    out, _ = suite
    row = _rows(out)["safefql-paperbackup"]
    assert row["seeds"] == "0" and row["failed"] == "2" and row["mean_return"] == ""
    error = json.loads((out / "cells" / "safefql-paperbackup-s1" / "error.json").read_text())
    assert "no_such_key" in error["error"] and "Traceback" in error["traceback"]
    assert not (out / "cells" / "safefql-paperbackup-s1" / "result.json").exists()
    assert "safefql-paperbackup-s0: ValueError: unknown SafeFQLConfig key(s) ['no_such_key']" in \
        (out / "table.md").read_text()
    run = json.loads((out / "run.json").read_text())
    assert run["cells"] == {"total": 6, "computed": 6, "skipped": 0, "failed": 2}
    assert run["cells_per_hour"] > 0 and run["ray"]["cpus"] == 2
    assert all(run["cell_seconds"][f"{m}-s{s}"] >= 0 for m in METHODS for s in (0, 1))


def test_rerun_recomputes_only_the_failed_cells(suite, tiny_boat_h5, tmp_path):
    out = tmp_path / "suite"  # a copy: the other tests read the first run's run.json and tables
    shutil.copytree(suite[0], out)
    done = [out / "cells" / f"{m}-s{s}" for m in METHODS[:2] for s in (0, 1)]
    stamps = {d: ((d / "result.json").stat().st_mtime_ns, (d / "run" / "checkpoint.pt").stat().st_mtime_ns)
              for d in done}
    assert benchmark.main(_args(tiny_boat_h5, out)) == 1
    assert stamps == {d: ((d / "result.json").stat().st_mtime_ns, (d / "run" / "checkpoint.pt").stat().st_mtime_ns)
                      for d in done}
    run = json.loads((out / "run.json").read_text())
    assert run["cells"] == {"total": 6, "computed": 2, "skipped": 4, "failed": 2}


def test_results_from_other_settings_are_not_reused(suite, tiny_boat_h5, capsys):
    out, _ = suite
    args = _args(tiny_boat_h5, out)
    args[args.index("--steps") + 1] = "31"
    assert benchmark.main(args) == 2
    assert "computed with other settings" in capsys.readouterr().err


def test_runs_from_scores_an_earlier_suites_runs_again_without_training(suite, tiny_boat_h5, tmp_path, capsys):
    earlier, _ = suite
    out = tmp_path / "rescored"
    assert benchmark.main(_args(tiny_boat_h5, out, "--runs-from", str(earlier), "--proposals", "4")) == 1
    assert "reusing 4 trained run(s)" in capsys.readouterr().out   # bc and nodistill; paperbackup never trained
    for s in (0, 1):
        cell, before = out / "cells" / f"safefql-nodistill-s{s}", earlier / "cells" / f"safefql-nodistill-s{s}"
        # the copied run was finished: not one more training step logged, the same weights scored
        assert (cell / "run" / "metrics.csv").read_text() == (before / "run" / "metrics.csv").read_text()
        evaluation = json.loads((cell / "result.json").read_text())["evaluation"]
        assert evaluation["proposals"] == 4 and "decision_modes" in evaluation
    assert benchmark.main(_args(tiny_boat_h5, tmp_path / "x", "--runs-from", str(tmp_path / "nothing"))) == 2
    assert "no cells/ directory there" in capsys.readouterr().err


def test_set_applies_a_key_to_the_methods_that_have_it():
    sets = benchmark.parse_sets(["batch_size=64", "hidden=[8]", "fisor:candidates=4"], ["bc", "fisor", "safefql"])
    assert sets == {"bc": {"batch_size": 64, "hidden": [8]}, "fisor": {"batch_size": 64, "candidates": 4},
                    "safefql": {"batch_size": 64}}
    with pytest.raises(RunError, match="no method of this benchmark has a config key 'alhpa'"):
        benchmark.parse_sets(["alhpa=1"], ["bc", "safefql"])
    with pytest.raises(RunError, match="'fisor' is not in this benchmark"):
        benchmark.parse_sets(["fisor:candidates=4"], ["bc"])
    with pytest.raises(RunError, match="expects KEY=VALUE, got 'alpha'"):     # no silent alpha=None
        benchmark.parse_sets(["safefql:alpha"], ["safefql"])
    # a ':' inside the value does not name a method
    assert benchmark.parse_sets(["safefql:phases={a: 1}"], ["safefql"]) == {"safefql": {"phases": {"a": 1}}}


def test_with_proposals_every_method_with_a_safety_critic_goes_through_the_runtime_check():
    """--proposals N: SafeFQL cells run N proposals (an explicit override of the bundle's
    decision), FISOR-style cells their own candidates through the same check, fallbacks and
    extra samples; BC, without a safety critic, stays raw. Without proposals all are raw."""
    cell = lambda method, n: benchmark.Cell("boat", method, 0, {}, "d.h5", "out", None, 0, 1, proposals=n)  # noqa: E731
    assert cell("safefql", 4).deployed and cell("safefql", 4).ranked_proposals == 4
    assert cell("safefql-nodistill", 4).deployed
    assert cell("fisor", 4).deployed and cell("fisor", 4).ranked_proposals is None
    assert not cell("bc", 4).deployed
    assert not any(cell(m, 1).deployed for m in ("safefql", "fisor", "bc"))


def test_suite_lists_every_baseline_and_ablation():
    from safefql_core.training import ALGOS
    assert set(benchmark.SUITES["boat"]["methods"]) == set(ALGOS)


def test_safety_gym_suite_has_a_section_per_task_with_normalised_scores(embedded_ray, tmp_path):
    import importlib.util
    if importlib.util.find_spec("safety_gymnasium") is None:
        pytest.skip("safety-gymnasium (optional) is not installed")
    from offline_train import collect
    tasks = ["SafetyPointCircle1-v0", "SafetyPointGoal1-v0"]  # HalfCheetah's data needs SAC training
    for task in tasks:  # tiny stand-ins for the standard datasets, where the suite looks for them
        assert collect.main(["--task", task, "--seed", "1", "--episodes", "2", "--max-episode-steps", "60",
                             "--no-progress", "--out", str(tmp_path / "data" / f"{task}.h5")]) == 0
    argv = ["--suite", "safety_gym", "--tasks", *tasks, "--out", str(tmp_path), "--methods", "bc", "safefql",
            "--seeds", "1", "--steps", "10", "--set", "hidden=[16]", "critic_hidden=[16]", "flow_hidden=[16]",
            "flow_steps=2", "--episodes", "2", "--latency-calls", "0", "--no-progress"]
    assert benchmark.main([*argv, "--proposals", "4"]) == 0
    with (tmp_path / "table.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["task"], r["method"]) for r in rows] == [(t, m) for t in tasks for m in ("bc", "safefql")]
    for row in rows:
        result = json.loads((tmp_path / "cells" / row["task"] / f"{row['method']}-s0" / "result.json").read_text())
        evaluation = result["evaluation"]
        assert evaluation["task"] == row["task"] and evaluation["count"] == 2
        assert float(row["normalized_cost"]) == pytest.approx(evaluation["normalized_cost"]["mean"])
        assert float(row["normalized_reward"]) == pytest.approx(evaluation["normalized_reward"]["mean"])
        # SafeFQL is scored by its deployed decision with 4 proposals; BC by its policy
        deployed = row["method"] == "safefql"
        assert ("decision_modes" in evaluation) == deployed and evaluation["proposals"] == (4 if deployed else 1)
        assert result["settings"].get("proposals") == (4 if deployed else None)
        assert row["train_seconds"] != ""   # from the run (NaN, written empty, if it came from the bundle)
    table = (tmp_path / "table.md").read_text()
    assert all(f"`{t}`: 2 episodes" in table for t in tasks) and "normalized cost (κ 10)" in table
    assert "4 proposals per tick" in table
    assert benchmark.main(argv) == 2   # the SafeFQL cells were scored with 4 proposals, not reused for 1
    args = benchmark.main.__globals__["argparse"].Namespace(
        suite="safety_gym", tasks=None, methods=["bc"], seed_list=None, seeds=1, set=[], steps=None,
        data=str(tmp_path / "x.h5"), out=str(tmp_path), episodes=None, latency_calls=0, threads_per_cell=1,
        proposals=1, init_states="validation")
    with pytest.raises(RunError, match="--data names one dataset"):
        benchmark.plan(args)
    args.tasks = ["boat"]
    with pytest.raises(RunError, match=r"--tasks \['boat'\] not in suite safety_gym"):
        benchmark.plan(args)

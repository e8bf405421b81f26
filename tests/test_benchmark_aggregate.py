"""The benchmark's aggregation on a hand-built table: the numbers a suite reports are the mean
and sample standard deviation over finished seeds of the *feasible* block (boat), with every
column taken from its own key, failed cells counted and left out of the means."""
import json
import math

import pytest

from offline_train import benchmark, benchmark_report

BOAT = [  # (return, violations, zero-violation rate) for every episode, then for feasible starts
    {"all": (-520.0, 1.5, 0.90), "feasible": (-500.0, 0.25, 0.99)},
    {"all": (-540.0, 2.5, 0.80), "feasible": (-510.0, 0.75, 0.97)},
]


def _write(cell: benchmark.Cell, doc: dict) -> None:
    cell.dir.mkdir(parents=True, exist_ok=True)
    name = benchmark_report.RESULT if doc["status"] == "ok" else benchmark_report.ERROR
    (cell.dir / name).write_text(json.dumps(doc))


def _block(values: tuple[float, float, float], count: int) -> dict:
    ret, viol, zero = values
    return {"mean_return": ret, "mean_violations": viol, "zero_violation_rate": zero, "count": count}


def _cell(tmp_path, method: str, seed: int, task: str = "boat") -> benchmark.Cell:
    return benchmark.Cell(task=task, method=method, seed=seed, overrides={}, data="d.h5", out=str(tmp_path),
                          episodes=500, latency_calls=10, threads=1)


def test_aggregate_reports_the_feasible_block_mean_and_sample_std(tmp_path):
    cells = [_cell(tmp_path, "safefql", s) for s in range(3)]
    for cell, table in zip(cells, BOAT):
        _write(cell, {"status": "ok", "train_seconds": 10.0 * (cell.seed + 1), "latency": {"median_us": 40.0},
                      "evaluation": {**_block(table["all"], 500), "feasible": _block(table["feasible"], 497)}})
    _write(cells[2], {"status": "failed", "cell": cells[2].name, "error": "boom"})

    rows, failed = benchmark_report.aggregate(cells)

    assert len(rows) == 1 and [f["cell"] for f in failed] == [cells[2].name]
    row = rows[0]
    assert (row["seeds"], row["failed"], row["episodes"]) == (2, 1, 497)
    assert row["mean_return"] == pytest.approx(-505.0)
    assert row["mean_return_std"] == pytest.approx(math.sqrt(50.0))       # ddof=1 over -500, -510
    assert row["mean_violations"] == pytest.approx(0.5)
    assert row["mean_violations_std"] == pytest.approx(math.sqrt(0.125))
    assert row["zero_violation_rate"] == pytest.approx(0.98)
    assert row["train_seconds"] == pytest.approx(15.0)
    assert row["latency_median_us"] == pytest.approx(40.0)
    assert math.isnan(row["normalized_cost"])


def test_aggregate_without_a_feasible_block_scores_every_episode_and_dsrl(tmp_path):
    cells = [_cell(tmp_path, "bc", s, task="SafetyPointGoal1-v0") for s in range(2)]
    for cell, (reward, cost) in zip(cells, [(0.2, 0.5), (0.4, 1.5)]):
        _write(cell, {"status": "ok", "train_seconds": 1.0, "latency": None,
                      "evaluation": {**_block((10.0, 3.0, 0.5), 100), "normalized_reward": {"mean": reward},
                                     "normalized_cost": {"mean": cost}}})
    (row,), failed = benchmark_report.aggregate(cells)
    assert not failed and row["episodes"] == 100
    assert row["normalized_reward"] == pytest.approx(0.3)
    assert row["normalized_cost"] == pytest.approx(1.0)
    assert row["normalized_cost_std"] == pytest.approx(math.sqrt(0.5))
    assert math.isnan(row["latency_median_us"]) and math.isnan(row["latency_median_us_std"])

"""The benchmark's report: each cell's outcome read back from `<out>/cells/`, aggregated over
seeds (mean ± std), with the boat's DP-reference row, as `table.csv`, `table.md` and
`benchmark.png`. Kept apart from offline_train.benchmark, which plans and runs the cells,
so the report can be read, and rebuilt from a finished `--out`, on its own.
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from safefql_core.envs.boat_reference import summarise
from safefql_core.pipeline.evaluate import load_initial_states

if TYPE_CHECKING:
    from offline_train.benchmark import Cell

RESULT, ERROR, REFERENCE = "result.json", "error.json", "reference.json"  # in a cell's directory; in --out
COLUMNS = ("mean_return", "mean_violations", "zero_violation_rate", "normalized_reward", "normalized_cost",
           "train_seconds", "latency_median_us")
LATENCY_NOTE = ("Runtime.decide at batch 1 (onnxruntime, uncalibrated bundle: δ* = 0, no fallback actions), "
                "timed inside the cell while other cells run; use `offline_train.speed latency` on an idle "
                "machine for the latency claim. BC methods and SafeIFQL have no deployable bundle: no latency; "
                "SafeIFQL is always scored by its own policy, its N candidates and their choice.")


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write-then-rename: a reader (or a crash) never sees half a file under the final name."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


def outcome(cell: Cell) -> dict[str, Any]:
    for name in (RESULT, ERROR):
        if (cell.dir / name).is_file():
            return json.loads((cell.dir / name).read_text())
    return {"status": "failed", "cell": cell.name, "error": "no result: the cell did not run"}


def cell_values(result: dict[str, Any]) -> dict[str, float]:
    """The table's numbers for one finished cell: on the boat its feasible states (evaluate's
    `feasible` block), elsewhere every episode plus the DSRL-normalised scores."""
    evaluation = result["evaluation"]
    scored = evaluation.get("feasible", evaluation)
    latency = result.get("latency")
    return {"mean_return": scored.get("mean_return", math.nan),
            "mean_violations": scored.get("mean_violations", math.nan),
            "zero_violation_rate": scored.get("zero_violation_rate", math.nan),
            "normalized_reward": evaluation.get("normalized_reward", {}).get("mean", math.nan),
            "normalized_cost": evaluation.get("normalized_cost", {}).get("mean", math.nan),
            "train_seconds": result["train_seconds"],
            "latency_median_us": latency["median_us"] if latency else math.nan,
            "episodes": scored["count"]}


def aggregate(cells: list[Cell]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(one row per task and method: mean and std over its finished seeds, failed cells)."""
    rows, failed = [], []
    for task, method in dict.fromkeys((c.task, c.method) for c in cells):
        outcomes = [outcome(c) for c in cells if (c.task, c.method) == (task, method)]
        ok = [cell_values(r) for r in outcomes if r["status"] == "ok"]
        failed += [r for r in outcomes if r["status"] != "ok"]
        starts = next(c.init_states for c in cells if c.task == task) or ""
        row: dict[str, Any] = {"task": task, "method": method, "init_states": starts, "seeds": len(ok),
                               "failed": len(outcomes) - len(ok), "episodes": ok[0]["episodes"] if ok else ""}
        for col in COLUMNS:
            values = np.array([v[col] for v in ok], dtype=float)
            values = values[~np.isnan(values)]
            row[col] = float(values.mean()) if len(values) else math.nan
            row[f"{col}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        rows.append(row)
    return rows, failed


def dp_reference(cells: list[Cell], out: Path) -> dict[str, Any] | None:
    """offline_train.reference's summary on the boat cells' starts (None without boat cells),
    computed once per --out and kept in reference.json with the starts it was computed on."""
    cell = next((c for c in cells if c.task == "boat"), None)
    if cell is None:
        return None
    starts = {"init_states": cell.init_states, "episodes": cell.episodes}
    path = out / REFERENCE
    if path.is_file() and (stored := json.loads(path.read_text())).get("starts") == starts:
        return stored
    doc = {"starts": starts,
           **summarise(load_initial_states(cell.init_states or "test", cell.episodes))}
    write_json(path, doc)
    return doc


def reference_row(ref: dict[str, Any]) -> dict[str, Any]:
    """The DP reference as a boat table row: its certified return on the feasible starts, where
    it has no violation by construction (boat_reference)."""
    values = {"mean_return": ref["mean_optimal_return_feasible"], "mean_violations": 0.0, "zero_violation_rate": 1.0}
    row: dict[str, Any] = {"task": "boat", "method": "dp-reference", "init_states": ref["starts"]["init_states"],
                           "seeds": "", "failed": "", "episodes": ref["count"] - ref["doomed_count"]}
    for col in COLUMNS:
        row[col], row[f"{col}_std"] = values.get(col, math.nan), math.nan
    return row


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()})


def _pm(row: dict[str, Any], col: str, fmt: str, scale: float = 1.0, unit: str = "") -> str:
    """'mean ± std' of a column; the std is left out with one seed, the cell blank with none."""
    mean, std = row[col], row[f"{col}_std"]
    if math.isnan(mean):
        return "–"
    return format(mean * scale, fmt) + ("" if math.isnan(std) else " ± " + format(std * scale, fmt)) + unit


def markdown(rows: list[dict[str, Any]], failed: list[dict[str, Any]], title: str) -> str:
    lines = [f"# {title}"]
    for task in dict.fromkeys(r["task"] for r in rows):
        lines += ["", *task_table([r for r in rows if r["task"] == task], task)]
    lines += ["", f"Latency: {LATENCY_NOTE}"]
    if failed:
        lines += ["", "Failed cells (traceback in cells/<cell>/error.json; a rerun retries them):", ""]
        lines += [f"- {r['cell']}: {r['error'].splitlines()[0] if r['error'] else '?'}" for r in failed]
    return "\n".join(lines) + "\n"


def task_table(rows: list[dict[str, Any]], task: str) -> list[str]:
    """One task's rows: the boat on its feasible starts, a Safety Gymnasium task DSRL-normalised."""
    boat = task == "boat"
    episodes = next((r["episodes"] for r in rows if r["episodes"]), "?")  # from a finished cell
    head = (f"Feasible initial states of the `{rows[0]['init_states']}` set only (doomed states excluded, as in "
            "offline_train.evaluate's `feasible` block); mean ± std over the finished seeds; `dp-reference`: "
            "the best certified safe controller on the same starts (offline_train.reference)." if boat else
            f"`{task}`: {episodes} episodes per seed (reset seeds = the training seed + 0..); "
            "normalised as DSRL (cost at κ = 10; ≤ 1 is safe); mean ± std over the finished seeds.")
    gym = "" if boat else " normalized reward | normalized cost (κ 10) |"
    lines = [head, "", "| method | seeds | failed | return | violating steps / episode | zero-violation episodes |"
             + gym + " train time (s) | decision latency (µs, median) |",
             "|---|---|---|---|---|---|" + ("" if boat else "---|---|") + "---|---|"]
    for r in rows:
        norm = "" if boat else f" {_pm(r, 'normalized_reward', '.3f')} | {_pm(r, 'normalized_cost', '.2f')} |"
        lines.append(f"| {r['method']} | {r['seeds']} | {r['failed']} | {_pm(r, 'mean_return', '.1f')} "
                     f"| {_pm(r, 'mean_violations', '.2f')} | {_pm(r, 'zero_violation_rate', '.1f', 100, ' %')} |"
                     + norm + f" {_pm(r, 'train_seconds', '.0f')} | {_pm(r, 'latency_median_us', '.1f')} |")
    return lines


# Per-task panels: (column, y label, colour); each label says which direction is better.
PANELS = [("mean_return", "return ↑ (higher is better)", "tab:blue"),
          ("mean_violations", "violating steps / episode ↓ (lower is better)", "tab:red")]
GYM_PANELS = [("normalized_cost", "normalised cost (κ 10) ↓\n≤ 1 is within budget", "tab:orange")]


def plot(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    """Per task: return, violating steps and (Safety Gymnasium) DSRL-normalised cost per
    method, std over seeds as error bars (paper-style)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    columns = len(PANELS) + (len(GYM_PANELS) if any(t != "boat" for t in tasks) else 0)
    width = max(3.5 * columns, 0.75 * columns * max(sum(r["task"] == t for r in rows) for t in tasks))
    fig, axes = plt.subplots(len(tasks), columns, figsize=(width, 3.8 * len(tasks)), squeeze=False)
    for task, row_axes in zip(tasks, axes):
        task_rows = [r for r in rows if r["task"] == task]
        panels = PANELS if task == "boat" else PANELS + GYM_PANELS
        for ax, (col, label, colour) in zip(row_axes, panels):
            _bars(ax, task_rows, col, label, colour)
            ax.set_title(f"{task}" + (", feasible starts" if task == "boat" and col == "mean_return" else ""),
                         fontsize=8)
        for ax in row_axes[len(panels):]:
            ax.set_visible(False)
        if task != "boat":
            row_axes[len(PANELS)].axhline(1.0, color="k", ls="--", lw=0.8)  # the cost budget
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _bars(ax, rows: list[dict[str, Any]], col: str, label: str, colour: str) -> None:
    names = [r["method"] for r in rows]
    mean = np.array([r[col] for r in rows], dtype=float)
    std = np.nan_to_num(np.array([r[f"{col}_std"] for r in rows], dtype=float))
    ax.bar(names, mean, yerr=std, capsize=4, color=colour, alpha=0.8)  # NaN: no bar
    for i in np.flatnonzero(np.isnan(mean)):
        ax.text(i, 0, "no result", ha="center", va="bottom", fontsize=8, color="0.4")
    ax.axhline(0, color="0.5", lw=0.6)
    ax.set_ylabel(label)
    ax.tick_params(axis="x", labelrotation=35)
    for label_ in ax.get_xticklabels():
        label_.set_horizontalalignment("right")


def report(cells: list[Cell], out: Path, title: str) -> tuple[str, int]:
    rows, failed = aggregate(cells)
    ref = dp_reference(cells, out)
    if ref is not None:
        last_boat = max(i for i, r in enumerate(rows) if r["task"] == "boat")
        rows.insert(last_boat + 1, reference_row(ref))
    write_csv(out / "table.csv", rows)
    table = markdown(rows, failed, title)
    (out / "table.md").write_text(table)
    plot(out / "benchmark.png", rows, title)
    return table, len(failed)

"""`python -m offline_train.benchmark`: every method x seed trained, evaluated and timed, on Ray.

The paper's comparison, reproduced on our data and infrastructure: SafeFQL, its ablations
and the baselines (the `--algo` names of offline_train.fit) each trained for several seeds,
evaluated on the boat's fixed initial states with offline_train.evaluate, and their
deployed decision timed through the runtime. The boat's starts are `--init-states`: the
validation set by default, since a suite is how settings are chosen; `--init-states test` for
the numbers a report quotes (safefql_core.envs.boat.STATE_SETS). Every output says which set,
and the boat table has a `dp-reference` row: offline_train.reference (the best certified safe
controller) on the same starts. One (method, seed) is a *cell*; cells are
independent Ray tasks, so the same command runs on this machine (embedded Ray, no setup) or
fans out over a cluster (`--ray-address`).

    python -m offline_train.benchmark --suite boat --seeds 5 --out results/
    python -m offline_train.benchmark --suite boat --seeds 5 --out results/ --ray-address HOST:6379
    python -m offline_train.benchmark --suite safety_gym --seeds 3 --out results/sg/
    python -m offline_train.benchmark --suite safety_gym --tasks SafetyHalfCheetahVelocity-v1 \
        --proposals 16 --out results/hc/

A suite may span several tasks (`safety_gym`: SafetyPointCircle1-v0 and SafetyPointGoal1-v0);
each task trains with its config/<task>.yaml, on `<out>/data/<task>.h5` (generated with
offline_train.collect --seed 0 if missing), and is scored raw and DSRL-normalised over
`--episodes` resets (offline_train.evaluate); its table has one section per task.

SafeFQL is scored by its raw actor (one proposal, z = 0) unless `--proposals N` (N > 1):
then its cells (the ablations too) score their deployed decision instead, the exported
bundle run by `evaluate --bundle --proposals N --override-decision` (uncalibrated: δ* = 0),
the best of N actor noises per tick (docs/DESIGN.md, "Proposals"). The FISOR-style cells then
go through the same runtime check too (`evaluate --bundle`: its own N candidates, then the
δ* check, the fallbacks and extra samples), so that no method is scored through a shield
the other lacks; BC has no safety critic and stays raw, and SafeIFQL, which has no bundle
(safefql_core/safeifql.py), is scored by its own policy: its N candidates and their choice.

Each cell writes `<out>/cells/<method>-s<seed>/`: the training run (`run/`, resumable from
its checkpoint), the bundle, `eval.json`, and last `result.json` (atomically). A rerun skips
cells that have a result.json, so an interrupted suite picks up where it stopped; a cell that
raises writes `error.json` (the traceback), is listed as failed in the table and retried by
the next run, and never stops the other cells. At the end: `table.csv`, `table.md`,
`benchmark.png` (return and violations per method, std over seeds as error bars) and
`run.json` (suite wall time, cells per hour, per-cell wall time: the numbers for a scaling
table). The exit status is 1 when a cell failed, 2 on bad arguments.

On a cluster, every node needs this project installed (same Python environment) and must
see `--data` and `--out` at the same paths (a shared filesystem); the driver also stores
each returned result under `--out`, so the table is complete even without one.

`--runs-from EARLIER_OUT` scores the runs of an earlier suite another way without retraining:
each cell starts from a copy of its run there (same method, seed, settings and data, or the
cell is refused as a mismatched resume), e.g. the raw-actor suite again with `--proposals 16`.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import sys
import time
import traceback
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from offline_train.benchmark_report import ERROR, RESULT, outcome, report, write_json
from offline_train.cli import add_set_argument, parse_override, set_threads
from offline_train.cli import write_json as write_cli_json
from safefql_core.bundle import load_bundle
from safefql_core.data import DatasetError
from safefql_core.learners import CAPABILITIES
from safefql_core.pipeline.collect import DEFAULT_TRANSITIONS, CollectOptions, collect
from safefql_core.pipeline.collect import describe as describe_collected
from safefql_core.pipeline.evaluate import EvaluateOptions, evaluate
from safefql_core.pipeline.evaluate import describe as describe_evaluation
from safefql_core.pipeline.export import export_run
from safefql_core.pipeline.latency import observations, time_variants
from safefql_core.pipeline.train import load_overrides
from safefql_core.runtime import Runtime, RuntimeConfig
from safefql_core.training import ALGOS, RunError, TrainOptions, get_algo, learner_name, load_run, train

# Suites: the tasks (each with its standard `offline_train.collect --seed 0` dataset of
# `transitions`), the methods, and the evaluation episodes per cell.
SUITES: dict[str, dict[str, Any]] = {
    "boat": {"tasks": ("boat",), "transitions": None, "episodes": None,   # None: every start of the set
             "methods": ("safefql", "safefql-lagrangian", "safefql-nodistill", "safefql-paperbackup",
                         "fisor", "safeifql", "bc", "bc-safe")},
    # 250k transitions: a full collection of both tasks takes ~15 min on one core (resets
    # rebuild the MuJoCo world); docs/notebook/safety-gymnasium-sessions-4-8.md.
    # HalfCheetahVelocity's dataset first trains its SAC behaviour snapshots (~20 min, one core).
    "safety_gym": {"tasks": ("SafetyPointCircle1-v0", "SafetyPointGoal1-v0", "SafetyHalfCheetahVelocity-v1"),
                   "transitions": 250_000,
                   "episodes": 10, "methods": ("safefql", "fisor", "safeifql", "bc", "bc-safe")},
}
CELLS, RUN = "cells", "run"


@dataclass(frozen=True)
class Cell:
    """One (method, seed) of a suite, with everything its Ray task needs."""

    task: str
    method: str
    seed: int
    overrides: dict[str, Any]
    data: str
    out: str
    episodes: int | None
    latency_calls: int
    threads: int
    proposals: int = 1
    init_states: str | None = None   # boat: the --init-states of its evaluation

    @property
    def deployed(self) -> bool:
        """Scored through its bundle's runtime decision (--proposals N > 1): a learner that ranks
        proposals with N per tick, a FISOR-style one with its own candidates, both through the
        same check, fallbacks and extra samples; a learner without a bundle (BC) stays raw."""
        return self.proposals > 1 and CAPABILITIES[learner_name(self.method)].deployable

    @property
    def ranked_proposals(self) -> int | None:
        """The proposals per tick its decision runs (an override of the bundle's): N for a
        learner that ranks proposals, None (the bundle's) for the others."""
        return self.proposals if self.deployed and CAPABILITIES[learner_name(self.method)].proposals else None

    @property
    def name(self) -> str:
        """<method>-s<seed>; under <task>/ for a task other than the boat."""
        return f"{self.method}-s{self.seed}" if self.task == "boat" else f"{self.task}/{self.method}-s{self.seed}"

    @property
    def dir(self) -> Path:
        return Path(self.out) / CELLS / self.name

    def settings(self) -> dict[str, Any]:
        """What a stored result must have been computed with to be reused."""
        return {"method": self.method, "seed": self.seed, "overrides": self.overrides, "data": self.data,
                "episodes": self.episodes, "latency_calls": self.latency_calls,
                **({"proposals": self.proposals} if self.deployed else {}),
                **({"init_states": self.init_states} if self.init_states else {})}


# ---- one cell (runs inside a Ray worker) -----------------------------------------------------
def run_cell(cell: Cell) -> dict[str, Any]:
    """Train -> evaluate -> time the decision; write result.json, or error.json. Never raises."""
    cell.dir.mkdir(parents=True, exist_ok=True)
    (cell.dir / ERROR).unlink(missing_ok=True)
    start = time.perf_counter()
    base = {"cell": cell.name, "method": cell.method, "seed": cell.seed, "settings": cell.settings(),
            "host": socket.gethostname(), "threads": cell.threads}
    try:
        set_threads(cell.threads)
        run = train(TrainOptions(data=cell.data, out=str(cell.dir / RUN), algo=cell.method, seed=cell.seed,
                                 overrides=cell.overrides, task=cell.task, progress=False))
        has_bundle = CAPABILITIES[learner_name(cell.method)].deployable   # not BC (LATENCY_NOTE)
        bundle = cell.dir / "bundle"
        if has_bundle and (cell.deployed or cell.latency_calls > 0):
            export_run(str(run), str(bundle), cell.seed)
        summary = evaluate_cell(cell, run, bundle)
        latency = decision_latency(bundle, cell) if has_bundle and cell.latency_calls > 0 else None
        trained = load_run(run)[1]   # a bundle's evaluation does not know the training time
        result = {"status": "ok", **base, "algo": summary["algo"], "trained_steps": trained["trained_steps"],
                  "train_seconds": round(trained["train_seconds"], 1), "evaluation": summary, "latency": latency,
                  "cell_seconds": round(time.perf_counter() - start, 2)}
        write_json(cell.dir / RESULT, result)
    except Exception as exc:  # noqa: BLE001 — one cell's failure must not stop the suite
        result = {"status": "failed", **base, "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc(), "cell_seconds": round(time.perf_counter() - start, 2)}
        write_json(cell.dir / ERROR, result)
    return result


def evaluate_cell(cell: Cell, run: Path, bundle: Path) -> dict[str, Any]:
    """The evaluate step on the cell's run (its raw actor), or on its bundle with the cell's
    proposals: the boat's first `episodes` starts of its --init-states (all: None), or
    `episodes` resets (seeds seed..) of a Safety Gymnasium task. Kept as <cell>/eval.json, as
    `evaluate --json` writes it.
    Scored at one torch thread whatever --threads-per-cell (which speeds up training), as
    `evaluate` scores by default: a fixed count keeps the numbers the same across settings."""
    set_threads(1)
    scored = EvaluateOptions(bundle=str(bundle), task=cell.task, proposals=cell.ranked_proposals,
                             override_decision=True) if cell.deployed else EvaluateOptions(run=str(run))
    summary = evaluate(replace(scored, episodes=cell.episodes, init_states=cell.init_states, seed=cell.seed)).summary
    print(describe_evaluation(summary))   # the cell's line in the suite's log, as `evaluate` prints it
    write_cli_json(cell.dir / "eval.json", summary)
    sys.stdout.flush()   # a Ray worker's stdout is a file: unflushed, the last cell's lines may never reach the log
    return summary


def decision_latency(bundle_dir: Path, cell: Cell) -> dict[str, Any]:
    """Median/p99 of the deployed decision at batch 1 (with the cell's proposals when it is
    scored through its bundle)."""
    bundle = load_bundle(bundle_dir)
    decision = bundle.decision.with_changes(proposals=cell.ranked_proposals)
    runtime = Runtime(bundle, RuntimeConfig(threads=cell.threads, seed=cell.seed, decision=decision,
                                            override_decision=True))
    obs = observations(bundle, 500, cell.seed)
    samples, modes = time_variants({"decide": runtime.decide}, obs, cell.latency_calls, rounds=10,
                                         warmup=min(200, cell.latency_calls))
    us, mode = samples["decide"], modes["decide"]
    return {"median_us": round(float(np.median(us)), 2), "p99_us": round(float(np.percentile(us, 99)), 2),
            "calls": int(len(us)), "nominal_fraction": round(float(np.mean(mode == "NOMINAL")), 4)}


# ---- planning --------------------------------------------------------------------------------
def parse_sets(items: list[str], methods: list[str]) -> dict[str, dict[str, Any]]:
    """`--set [METHOD:]KEY=VALUE` -> per-method overrides.

    Without METHOD a key applies to every method whose config has it (batch_size to all,
    critic_hidden to the critic-based ones) and must fit at least one; with METHOD it applies
    to that method only and is checked by its cells (a bad key fails those cells).
    """
    per_method: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for item in items:
        target = item.partition("=")[0].rpartition(":")[0]   # method names hold no ':'; values may
        key, value = parse_override(item[len(target) + 1:] if target else item)
        if target:
            if target not in per_method:
                raise RunError(f"--set {item}: method '{target}' is not in this benchmark ({methods})")
            per_method[target][key] = value
            continue
        takers = [m for m in methods if key in {f.name for f in fields(get_algo(m).config)}]
        if not takers:
            raise RunError(f"--set {item}: no method of this benchmark has a config key '{key}'")
        for m in takers:
            per_method[m][key] = value
    return per_method


def plan(args: argparse.Namespace) -> list[Cell]:
    """Every cell of the run; refuses an --out whose finished cells used other settings."""
    suite = SUITES[args.suite]
    methods = list(dict.fromkeys(args.methods or suite["methods"]))
    unknown = [m for m in methods if m not in ALGOS]
    if unknown:
        raise RunError(f"unknown method(s) {unknown}; available: {sorted(ALGOS)}")
    seeds = list(dict.fromkeys(args.seed_list)) if args.seed_list is not None else list(range(args.seeds))
    tasks = list(dict.fromkeys(args.tasks or suite["tasks"]))
    if set(tasks) - set(suite["tasks"]):
        raise RunError(f"--tasks {sorted(set(tasks) - set(suite['tasks']))} not in suite {args.suite}; "
                       f"its tasks are {list(suite['tasks'])}")
    user = parse_sets(args.set, methods)
    if args.steps is not None:
        for m in methods:
            user[m]["steps"] = args.steps
    if args.data is not None and len(tasks) > 1:
        raise RunError(f"--data names one dataset, but this run has tasks {tasks}; leave it out (each task "
                       "uses <out>/data/<task>.h5, generated if missing) or pick one with --tasks")
    out = str(Path(args.out).resolve())
    episodes = args.episodes or suite["episodes"]
    cells = [Cell(task, m, s, {**load_overrides(None, m, task)[1], **user[m]}, data_path(args, task), out,
                  episodes, args.latency_calls, args.threads_per_cell, args.proposals,
                  args.init_states if task == "boat" else None)
             for task in tasks for m in methods for s in seeds]
    stale = [c.name for c in cells if (c.dir / RESULT).is_file()
             and json.loads((c.dir / RESULT).read_text()).get("settings") != c.settings()]
    if stale:
        raise RunError(f"{args.out} already holds results for {stale} computed with other settings "
                       "(overrides, steps, data, episodes, latency calls, proposals or initial states); pass a new "
                       "--out, or delete those cell directories to recompute them")
    return cells


def reuse_runs(cells: list[Cell], source: Path) -> int:
    """Copy each cell's run from an earlier suite's --out where the cell has none yet; the
    training then finds it finished (or resumes it, or refuses other settings). Returns how
    many were copied."""
    if not (source / CELLS).is_dir():
        raise RunError(f"--runs-from {source}: no {CELLS}/ directory there; pass the --out of an earlier "
                       "benchmark run")
    copied = 0
    for cell in cells:
        run, earlier = cell.dir / RUN, source / CELLS / cell.name / RUN
        if earlier.is_dir() and not run.exists():
            shutil.copytree(earlier, run)
            copied += 1
    return copied


def data_path(args: argparse.Namespace, task: str) -> str:
    """--data, else <out>/data.h5 (boat) or <out>/data/<task>.h5."""
    default = Path(args.out) / ("data.h5" if task == "boat" else f"data/{task}.h5")
    return str(Path(args.data or default).resolve())


def ensure_data(path: str, task: str, transitions: int | None, progress: bool = True) -> None:
    """A task's standard dataset (`offline_train.collect --seed 0`), generated once, with a
    progress bar: the boat's 1M transitions take about a minute before the first cell."""
    if Path(path).is_file():
        return
    count = transitions or DEFAULT_TRANSITIONS
    print(f"generating the standard {task} dataset ({count:,} transitions) into {path} before the first cell "
          "(offline_train.collect --seed 0; once, reused by later runs with this --out)", flush=True)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        print(describe_collected(collect(CollectOptions(task=task, out=path, seed=0, transitions=transitions,
                                                        progress=progress))))
    except (ImportError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise DatasetError(f"could not generate {path}; pass an existing dataset with --data") from None


# ---- running on Ray --------------------------------------------------------------------------
def start_ray(args: argparse.Namespace) -> bool:
    """Connect to --ray-address, or start an embedded local Ray; True if we started it."""
    quiet_ray()
    import ray
    if ray.is_initialized():  # e.g. a test or notebook already holds one
        return False
    if args.ray_address:
        ray.init(address=args.ray_address)
    else:
        ray.init(num_cpus=args.num_cpus or os.cpu_count(), include_dashboard=False)
    return True


def quiet_ray() -> None:
    """Keep Ray's noise out of the benchmark's output: no colour codes around the cells' lines
    (they end up in log files; RAY_COLOR_PREFIX=1 brings them back) and no warning that the
    embedded cluster uses token authentication (it still does: only the notice is dropped)."""
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)


def run_cells(cells: list[Cell], max_parallel: int | None, progress: bool) -> dict[str, float]:
    """Run the cells as Ray tasks, at most max_parallel in flight; store each outcome as it
    arrives. Returns each computed cell's wall time."""
    import ray
    from tqdm import tqdm
    task = ray.remote(run_cell)
    queue, pending, seconds = list(cells), {}, {}
    bar = tqdm(total=len(cells), desc="cells", unit="cell", disable=not progress)
    while queue or pending:
        while queue and (max_parallel is None or len(pending) < max_parallel):
            cell = queue.pop(0)
            pending[task.options(num_cpus=cell.threads, max_retries=0).remote(cell)] = cell
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        cell = pending.pop(ref)
        try:
            result = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 — the worker died (OOM, signal): report the cell
            result = {"status": "failed", "cell": cell.name, "method": cell.method, "seed": cell.seed,
                      "settings": cell.settings(), "error": f"{type(exc).__name__}: {exc}",
                      "traceback": "".join(traceback.format_exception(exc)), "cell_seconds": None}
        store(cell, result)
        seconds[cell.name] = result["cell_seconds"]
        bar.update(1)
        bar.set_postfix_str(f"{cell.name} {result['status']}")
    bar.close()
    return seconds


def store(cell: Cell, result: dict[str, Any]) -> None:
    """Keep the outcome under --out on the driver too (a cluster without shared storage)."""
    cell.dir.mkdir(parents=True, exist_ok=True)
    name = RESULT if result["status"] == "ok" else ERROR
    if not (cell.dir / name).is_file():
        write_json(cell.dir / name, result)
    if result["status"] == "ok":
        (cell.dir / ERROR).unlink(missing_ok=True)


# ---- CLI -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m offline_train.benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="boat", choices=sorted(SUITES))
    p.add_argument("--out", required=True, help="results directory (resumed if it holds cells)")
    p.add_argument("--tasks", nargs="+", help="a subset of the suite's tasks (default: all of them): "
                   + "; ".join(f"{name}: {' '.join(suite['tasks'])}" for name, suite in SUITES.items()))
    p.add_argument("--methods", nargs="+", help="--algo names (default: the suite's): " + "; ".join(
        f"{name} = {algo.help}" for name, algo in ALGOS.items()))
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, default=5, help="train seeds 0..N-1 (default 5)")
    seeds.add_argument("--seed-list", type=int, nargs="+", help="explicit training seeds")
    p.add_argument("--steps", type=int, help="override every method's gradient steps (quick runs)")
    add_set_argument(p, "[METHOD:]KEY=VALUE", "alpha=3 safefql-nodistill:batch_size=256 (for every method "
                                              "that has KEY, or for METHOD only)")
    p.add_argument("--data", help="dataset HDF5 of a one-task suite (default: <out>/data.h5 for the boat, "
                                  "<out>/data/<task>.h5 otherwise, generated with offline_train.collect --seed 0 "
                                  "if missing)")
    p.add_argument("--episodes", type=int, help="evaluation episodes per cell (boat: the first N starts of "
                                               "--init-states, default all; safety_gym: resets, default 10)")
    p.add_argument("--init-states", default="validation",
                   help="boat: the starts every cell is scored on: validation (default: the suite chooses settings), "
                        "test (to report), evaluation (the old tuned-on set) or an (N, 2) .npy file")
    p.add_argument("--latency-calls", type=int, default=2000,
                   help="timed batch-1 decisions per cell (0: no bundle export, no latency)")
    p.add_argument("--proposals", type=int, default=1,
                   help="above 1: score SafeFQL cells by their deployed decision with this many actor proposals "
                        "per tick (evaluate --bundle --proposals; docs/DESIGN.md \"Proposals\"), and FISOR-style "
                        "cells through the same runtime check; default 1: every method's raw policy")
    p.add_argument("--runs-from", metavar="DIR",
                   help="the --out of an earlier suite whose trained runs to reuse: a cell without a run of "
                        "its own starts from a copy of DIR/cells/<cell>/run, so a finished run is scored "
                        "again (e.g. with --proposals 16) without retraining; a run trained with other "
                        "settings is refused as a resumed one is")
    p.add_argument("--threads-per-cell", type=int, default=1, help="torch threads = Ray CPUs per cell")
    p.add_argument("--ray-address", help="existing Ray cluster (default: start an embedded local Ray)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the embedded Ray (default: all cores)")
    p.add_argument("--max-parallel", type=int, help="at most this many cells in flight (default: as CPUs allow)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if min(args.seeds, args.threads_per_cell, args.max_parallel or 1, args.proposals) < 1:
        p.error("--seeds, --threads-per-cell, --max-parallel and --proposals must be at least 1")
    try:
        cells = plan(args)
        if args.data is None:
            for task, data in dict.fromkeys((c.task, c.data) for c in cells):
                ensure_data(data, task, SUITES[args.suite]["transitions"], not args.no_progress)
        elif not Path(args.data).is_file():
            raise DatasetError(f"--data {args.data} does not exist; leave --data out to generate the "
                               f"standard dataset into {Path(args.out) / 'data.h5'}")
        todo = [c for c in cells if not (c.dir / RESULT).is_file()]
        if args.runs_from:
            print(f"reusing {reuse_runs(todo, Path(args.runs_from))} trained run(s) from {args.runs_from}")
    except (RunError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    print(f"{len(cells)} cells ({len(cells) - len(todo)} already done), {len(todo)} to run")
    started, t0 = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.perf_counter()
    seconds, resources = {}, {}
    if todo:
        import ray
        owned = start_ray(args)
        try:
            resources = {"cpus": ray.cluster_resources().get("CPU"), "nodes": len(ray.nodes())}
            seconds = run_cells(todo, args.max_parallel, not args.no_progress)
        finally:
            if owned:
                ray.shutdown()
    wall = time.perf_counter() - t0
    title = f"Benchmark: suite {args.suite}, seeds {sorted({c.seed for c in cells})}" + (
        f"; boat starts: the {args.init_states} set" if any(c.task == "boat" for c in cells) else "") + (
        f"; SafeFQL and FISOR-style scored by their deployed decision (runtime check, fallbacks), SafeFQL with "
        f"{args.proposals} proposals per tick" if args.proposals > 1 else "")
    table, failures = report(cells, out, title)
    write_json(out / "run.json", {
        "suite": args.suite, "methods": list(dict.fromkeys(c.method for c in cells)),
        "seeds": sorted({c.seed for c in cells}), "data": cells[0].data, "started": started,
        "ray": {"address": args.ray_address or "embedded", **resources},
        "threads_per_cell": args.threads_per_cell, "max_parallel": args.max_parallel, "proposals": args.proposals,
        "init_states": args.init_states,
        "cells": {"total": len(cells), "computed": len(seconds), "skipped": len(cells) - len(todo),
                  "failed": failures},
        "wall_seconds": round(wall, 2),
        "cells_per_hour": round(len(seconds) / wall * 3600, 2) if seconds else None,
        "cell_seconds": {c.name: outcome(c).get("cell_seconds") for c in cells},
    })
    print(table)
    print(f"wrote {out / 'table.md'}, table.csv, benchmark.png, run.json ({wall:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

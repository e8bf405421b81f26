"""Mutation testing of the safety path: how many small deliberate bugs the suite catches.

For each module of the safety path (runtime, calibration, bundle, alignment, losses), mutmut
(requirements-dev.txt) rewrites comparisons, constants and calls one at a time and runs that
module's own tests against each mutant. A mutant the tests do not fail on "survived": either a
test is missing or the change is equivalent (it cannot alter behaviour). `--explain` lists every
survivor with the reason recorded for it in tools/mutation_survivors.yaml, and fails on one
without (docs/notebook/mutation-survivors.md is its output).

One module at a time, with only its tests: mutmut runs the tests that reached a mutated
function during a first, unmutated run, and a whole-suite selection would make that first run
(and the mutants reached from ROS or end-to-end tests) cost hours on two cores. Each module runs
in its own scratch copy of the sources (build/mutation/<module>/) because mutmut reads its
configuration from the working directory's setup.cfg and writes its mutants next to it.

    make mutation                                        # every module, ~2 h on 2 loaded cores
    make mutation MODULES="losses alignment"             # some of them
    .venv/bin/python tools/mutation.py --summarise       # the scores of the last (or a running) run
    .venv/bin/python tools/mutation.py --survivors losses  # its survivors again, after adding tests
    .venv/bin/python tools/mutation.py --summarise --explain docs/notebook/mutation-survivors.md
    cd build/mutation/losses && ../../../.venv/bin/mutmut show NAME   # one survivor's diff
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "mutation"

# The tests that are about each module (the tests that only pass through it, such as the ROS
# nodes' or the end-to-end runs, would each cost seconds to minutes per mutant).
TESTS: dict[str, list[str]] = {
    "runtime": ["tests/test_runtime_safety.py", "tests/test_bundle_runtime.py", "tests/test_properties.py"],
    "calibration": ["tests/test_calibration.py"],
    "bundle": ["tests/test_bundle_runtime.py", "tests/test_bundle_errors.py", "tests/test_runtime_safety.py",
               "tests/test_properties.py"],
    "alignment": ["tests/test_alignment.py"],
    "losses": ["tests/test_losses.py"],
}
# Issue #32's targets: the share of mutants the module's tests kill.
TARGETS = {"runtime": 0.90, "calibration": 0.90, "bundle": 0.90, "alignment": 0.80, "losses": 0.80}
# Functions of these modules that are not on the safety path: their mutants are run but left
# out of the score (the histogram's colours and labels are checked by tests/test_plots.py,
# not by the module's own tests).
OFF_PATH = {"calibration": ("score_histogram",)}
# Why each surviving mutant is left alive (equivalent, or only on a machine with a GPU): read by --explain.
REASONS = ROOT / "tools" / "mutation_survivors.yaml"
SURVIVORS_HEADER = """# Surviving mutants and why (issue #32)

Written by `tools/mutation.py --explain` from the last runs' results (build/mutation/<module>.json)
and the reasons in tools/mutation_survivors.yaml; a survivor without a reason makes the command
fail. Scores and history: [mutation.md](mutation.md).
"""
# The outcomes (mutmut.stats.status_by_exit_code) in which the tests noticed the mutant.
CAUGHT = {"killed", "timeout", "segfault", "caught by type check"}


def prepare(module: str) -> None:
    """A fresh scratch copy of what the module's tests import and a setup.cfg for mutmut."""
    work = WORK / module
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis")
    for name in ("safefql_core", "tests"):
        shutil.copytree(ROOT / name, work / name, ignore=ignore)
    shutil.copy2(ROOT / "pytest.ini", work / "pytest.ini")
    configure(module, work)


def configure(module: str, work: Path) -> None:
    """mutmut's setup.cfg in `work`: the module to mutate and the tests to run on each mutant."""
    selection = "\n    ".join(TESTS[module])
    (work / "setup.cfg").write_text(f"""[mutmut]
source_paths = safefql_core
only_mutate = safefql_core/{module}.py
also_copy = pytest.ini
pytest_add_cli_args_test_selection =
    {selection}
# torch's threads do not survive a fork of a process that has used them.
process_isolation = forkserver
use_git_change_detection = false
""")


def mutate(work: Path, children: int, names: Sequence[str] = ()) -> None:
    """Run mutmut in `work` on every mutant, or on `names` only: it records each mutant's
    outcome as it goes (outcomes())."""
    env = {**os.environ, "SAFEFQL_FIXTURE_CACHE": str(WORK / "fixture_cache"),
           "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "OMP_NUM_THREADS": "1"}
    mutmut = Path(sys.executable).with_name("mutmut")
    subprocess.run([str(mutmut), "run", "--max-children", str(children), *names], cwd=work, env=env, check=True)


def outcomes(module: str, work: Path) -> dict[str, str]:
    """The outcome of every mutant mutmut has tested so far in `work`, by its name; mutants
    not yet tested are left out."""
    from mutmut.stats import status_by_exit_code
    meta = json.loads((work / "mutants" / "safefql_core" / f"{module}.py.meta").read_text())
    return {name: status_by_exit_code[code] for name, code in meta["exit_code_by_key"].items() if code is not None}


def show(work: Path, name: str) -> str:
    """The diff of one mutant."""
    mutmut = Path(sys.executable).with_name("mutmut")
    return subprocess.run([str(mutmut), "show", name], cwd=work, capture_output=True, text=True,
                          check=True).stdout


def changed_lines(diff: str) -> tuple[str, str]:
    """The original and the mutated source lines of a `mutmut show` diff, each joined into one."""
    lines = [line for line in diff.splitlines() if line[:1] in "-+" and line[:3] not in ("---", "+++")]
    return tuple(" ".join(line[1:].strip() for line in lines if line[0] == sign) for sign in "-+")  # type: ignore[return-value]


def function_of(name: str) -> str:
    """`Class.method` or `function` of a mutant's name: mutmut names them x_<function>__mutmut_<n>
    and xǁ<Class>ǁ<method>__mutmut_<n> after the module path."""
    mangled = name.rpartition(".")[2][1:].rpartition("__mutmut_")[0]
    return mangled[1:].replace("ǁ", ".") if mangled.startswith("ǁ") else mangled[1:]


def reason_for(module: str, name: str, mutated: str, reasons: list[dict[str, str]]) -> str | None:
    """Why a survivor is left alive: the first entry of tools/mutation_survivors.yaml whose
    module, function (a regular expression for the whole name) and change (one searched in the
    mutated line) match it."""
    for entry in reasons:
        if (entry["module"] == module and re.fullmatch(entry["function"], function_of(name))
                and re.search(entry["change"], mutated)):
            return entry["reason"]
    return None


def explain(out: Path) -> int:
    """Write every survivor of each module's last result (build/mutation/<module>.json) with its
    change and reason as markdown; the number of survivors without a recorded reason (each
    wants a test, or a reason if it is equivalent)."""
    reasons = yaml.safe_load(REASONS.read_text())
    rows, unexplained = [], 0
    for module in TESTS:
        if not (WORK / f"{module}.json").exists():
            continue
        row: dict[str, Any] = json.loads((WORK / f"{module}.json").read_text())
        rows += [f"\n## {module}: {row['caught']} of {row['mutants']} caught ({row['score']:.1%})\n",
                 "| mutant | original | mutated | why it survives |", "|---|---|---|---|"]
        for name in row["survivors"]:
            original, mutated = changed_lines(show(WORK / module, name))
            why = reason_for(module, name, mutated, reasons)
            unexplained += why is None
            cells = [f"`{c}`".replace("|", "\\|") for c in (name.rpartition(".")[2], original, mutated)]
            rows.append("| " + " | ".join(cells) + f" | {why or '**no reason: wants a test**'} |")
    out.write_text(SURVIVORS_HEADER + "\n".join(rows) + "\n")
    return unexplained


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", metavar="MODULE",
                    help=f"modules of safefql_core to mutate: {', '.join(TESTS)} (default: all)")
    ap.add_argument("--children", type=int, default=2, help="mutants tested at once (default 2: two cores)")
    ap.add_argument("--summarise", action="store_true",
                    help="only summarise the last run's outcomes in build/mutation/<module>/ (also a partial run's)")
    ap.add_argument("--survivors", action="store_true",
                    help="test the last full run's survivors again against the current tests (after adding one); "
                         "the score stays over all of that run's mutants")
    ap.add_argument("--explain", metavar="MARKDOWN",
                    help="write every module's survivors (of its last run) with their changes and reasons "
                         "(tools/mutation_survivors.yaml) to this file; exit status 1 if one has no reason")
    ap.add_argument("--json", default=str(WORK / "summary.json"), help="where to write the scores and survivors")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.modules) - set(TESTS))
    if unknown:
        ap.error(f"no mutation set for {', '.join(unknown)}; choose from {', '.join(TESTS)}")
    summary, below = {}, []
    for module in args.modules or list(TESTS):
        work, result = WORK / module, WORK / f"{module}.json"
        previous = json.loads(result.read_text()) if args.survivors or args.summarise and result.exists() else None
        if args.survivors:
            source = f"safefql_core/{module}.py"
            if (work / source).read_bytes() != (ROOT / source).read_bytes():
                ap.error(f"{source} changed since its full run (its mutants are of the old code): "
                         f"run `tools/mutation.py {module}` in full")
            shutil.rmtree(work / "tests")
            shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
            configure(module, work)
            mutate(work, args.children, list(previous["survivors"]))
        elif not args.summarise:
            prepare(module)
            mutate(work, args.children)
        tested = {name: status for name, status in outcomes(module, work).items()
                  if function_of(name) not in OFF_PATH.get(module, ())}
        if previous is not None:  # a survivors run: the mutants caught before stay caught
            total = previous["mutants"]
            now = {n: tested.get(n, s) for n, s in previous["survivors"].items()}
            survivors = {n: s for n, s in now.items() if s not in CAUGHT}
        elif tested:
            total = len(tested)
            survivors = {n: s for n, s in sorted(tested.items()) if s not in CAUGHT}
        else:
            print(f"{module}: no mutant tested yet in {work}")
            continue
        score = 1.0 - len(survivors) / total
        summary[module] = {"mutants": total, "caught": total - len(survivors), "score": score,
                           "target": TARGETS[module], "survivors": survivors}
        if not args.summarise or previous is None:
            result.write_text(json.dumps(summary[module], indent=2) + "\n")
        if score < TARGETS[module]:
            below.append(module)
        for name, status in survivors.items():
            print(f"--- {status}: {name}")
    Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{'module':<12} {'mutants':>7} {'caught':>6} {'score':>7} {'target':>6}")
    for module, row in summary.items():
        print(f"{module:<12} {row['mutants']:>7} {row['caught']:>6} {row['score']:>7.1%} {row['target']:>6.0%}")
    print(f"wrote {args.json}")
    if args.explain:
        unexplained = explain(Path(args.explain))
        print(f"wrote {args.explain}: {unexplained} survivor(s) without a reason")
        below += ["unexplained"] if unexplained else []
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())

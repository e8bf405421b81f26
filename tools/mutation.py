"""Mutation testing of the safety path: how many small deliberate bugs the suite catches.

For each module of the safety path (runtime, calibration, bundle, alignment, losses), mutmut
(requirements-dev.txt) rewrites comparisons, constants and calls one at a time and runs that
module's own tests against each mutant. A mutant the tests do not fail on "survived": either a
test is missing or the change is equivalent (it cannot alter behaviour), and
docs/notebook/mutation.md says which.

One module at a time, with only its tests: mutmut runs the tests that reached a mutated
function during a first, unmutated run, and a whole-suite selection would make that first run
(and the mutants reached from ROS or end-to-end tests) cost hours on two cores. Each module runs
in its own scratch copy of the sources (build/mutation/<module>/) because mutmut reads its
configuration from the working directory's setup.cfg and writes its mutants next to it.

    make mutation                                        # every module, ~2 h on 2 loaded cores
    make mutation MODULES="losses alignment"             # some of them
    .venv/bin/python tools/mutation.py --summarise       # the scores of the last (or a running) run
    .venv/bin/python tools/mutation.py --survivors losses  # its survivors again, after adding tests
    cd build/mutation/losses && ../../../.venv/bin/mutmut show NAME   # one survivor's diff
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", metavar="MODULE",
                    help=f"modules of safefql_core to mutate: {', '.join(TESTS)} (default: all)")
    ap.add_argument("--children", type=int, default=2, help="mutants tested at once (default 2: two cores)")
    ap.add_argument("--summarise", action="store_true",
                    help="only summarise the last run's outcomes in build/mutation/<module>/ (also a partial run's)")
    ap.add_argument("--survivors", action="store_true",
                    help="test the last run's survivors again against the current tests (after adding one)")
    ap.add_argument("--diffs", action="store_true", help="print each survivor's diff (slow: one mutmut call each)")
    ap.add_argument("--json", default=str(WORK / "summary.json"), help="where to write the scores and survivors")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.modules) - set(TESTS))
    if unknown:
        ap.error(f"no mutation set for {', '.join(unknown)}; choose from {', '.join(TESTS)}")
    summary, below = {}, []
    for module in args.modules or list(TESTS):
        work = WORK / module
        if args.survivors:
            shutil.rmtree(work / "tests")
            shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
            configure(module, work)
            mutate(work, args.children, [n for n, status in outcomes(module, work).items() if status not in CAUGHT])
        elif not args.summarise:
            prepare(module)
            mutate(work, args.children)
        tested = {name: status for name, status in outcomes(module, work).items()
                  if name.rpartition(".x_")[2].partition("__mutmut_")[0] not in OFF_PATH.get(module, ())}
        if not tested:
            print(f"{module}: no mutant tested yet in {work}")
            continue
        survivors = sorted(name for name, status in tested.items() if status not in CAUGHT)
        score = 1.0 - len(survivors) / len(tested)
        summary[module] = {"mutants": len(tested), "caught": len(tested) - len(survivors), "score": score,
                           "target": TARGETS[module], "survivors": {n: tested[n] for n in survivors}}
        if score < TARGETS[module]:
            below.append(module)
        for name in survivors:
            print(f"--- {tested[name]}: {name}" + (f"\n{show(work, name)}" if args.diffs else ""))
    Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{'module':<12} {'mutants':>7} {'caught':>6} {'score':>7} {'target':>6}")
    for module, row in summary.items():
        print(f"{module:<12} {row['mutants']:>7} {row['caught']:>6} {row['score']:>7.1%} {row['target']:>6.0%}")
    print(f"wrote {args.json}")
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())

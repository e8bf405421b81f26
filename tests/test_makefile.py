"""`make demo TASK=...`: the dry run (`make -n`) shows the commands each robot's demo runs.

What the commands must agree with is read from where it is defined, not written here: the node
parameters of config/<task>_nodes.yaml, the fixed test starts, the launcher's own parser. The
demo itself (minutes of training) is not run by the test suite; its pieces are (collect, fit
--bag, evaluate, safefql-launch --episodes: tests/test_diffdrive_*.py, tests/test_launch.py).
"""
from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from safefql_core.envs import boat, diffdrive
from safefql_ros import launcher

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def dry_run(tmp_path: Path, *variables: str) -> subprocess.CompletedProcess:
    """`make -n demo` with the bag and run under tmp_path (so the bag is always recorded)."""
    return subprocess.run(["make", "-n", "demo", f"BAG={tmp_path}/bag", f"RUN={tmp_path}/run", *variables],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def commands(out: str) -> dict[str, list[str]]:
    """The demo's commands by what they run (`offline_train.fit`, `safefql-launch`, ...) -> argv after it."""
    found = {}
    for line in out.replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        if "-m" in argv and argv.index("-m") + 1 < len(argv):
            found[argv[argv.index("-m") + 1]] = argv[argv.index("-m") + 2:]
        launch = [i for i, a in enumerate(argv) if a.endswith("/safefql-launch")]
        if launch:
            found["safefql-launch"] = argv[launch[0] + 1:]
    return found


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def node_params(task: str, node: str) -> dict:
    return yaml.safe_load((ROOT / "config" / f"{task}_nodes.yaml").read_text())[f"/**/{node}"]["ros__parameters"]


def test_diffdrive_demo_records_fits_evaluates_and_runs_the_diffdrive_robot(tmp_path):
    result = dry_run(tmp_path, "TASK=diffdrive")
    assert result.returncode == 0, result.stderr
    run = commands(result.stdout)
    collect, fit, evaluate, launch = (run[k] for k in ("offline_train.collect", "offline_train.fit",
                                                       "offline_train.evaluate", "safefql-launch"))
    assert option(collect, "--task") == "diffdrive" and option(collect, "--format") == "bag"
    # the bag recorded is the one converted, with the diff-drive robot's spec (config/diffdrive.yaml)
    assert option(fit, "--bag") == option(collect, "--out") == f"{tmp_path}/bag"
    assert option(fit, "--task") == "diffdrive" and "--config" not in fit
    bundle = f"{option(fit, '--out')}/bundle"
    assert option(evaluate, "--bundle") == bundle
    # evaluate scores the decision the node deploys, the bundle's (neither overrides it), on every fixed test start
    assert not {"--proposals", "--candidates", "--noise", "--override-decision"} & set(evaluate)
    assert node_params("diffdrive", "safefql_controller")["proposals"] == 0   # 0: the bundle's
    assert int(option(evaluate, "--episodes")) == len(diffdrive.evaluation_starts())
    args = launcher.parse_args(launch)
    assert (args.setup, args.bundle, args.init_states) == ("diffdrive", bundle, "evaluation")
    assert args.episodes and args.episodes <= len(diffdrive.evaluation_starts())
    assert args.episode_steps == node_params("diffdrive", "diffdrive_sim")["episode_steps"] == diffdrive.EPISODE_STEPS


def test_boat_stays_the_default_demo(tmp_path):
    result = dry_run(tmp_path)
    assert result.returncode == 0, result.stderr
    run = commands(result.stdout)
    assert option(run["offline_train.collect"], "--task") == option(run["offline_train.fit"], "--task") == "boat"
    assert int(option(run["offline_train.evaluate"], "--episodes")) <= len(boat.evaluation_states())
    args = launcher.parse_args(run["safefql-launch"])
    assert (args.setup, args.init_states) == ("boat", "evaluation") and args.episodes


def test_an_unknown_task_is_refused_before_anything_runs(tmp_path):
    result = dry_run(tmp_path, "TASK=submarine")
    assert result.returncode != 0
    assert "no demo for TASK=submarine" in result.stderr and "boat diffdrive" in result.stderr
    assert "offline_train" not in result.stdout

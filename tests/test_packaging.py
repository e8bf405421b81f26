"""The package as a ROS 2 engineer installs it: `colcon build` in a scratch workspace (the
ament_python layout `ros2 run` / `ros2 launch` rely on), package.xml's declared dependencies,
the lint rules (ruff.toml) over the whole repository and the types of safefql_core (mypy.ini).

colcon (colcon-common-extensions), ruff and mypy come from requirements.txt; where they are not
installed (a ROS machine's own Python), the tests are skipped saying so.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NODES = ("safefql_controller", "safefql_lifecycle_manager", "boat_sim", "safefql_player", "safefql_recorder",
         "episode_monitor")


def tool(name: str) -> str:
    path = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if path is None:
        pytest.skip(f"{name} is not installed (pip install -c constraints.txt -r requirements.txt)")
    return path


def test_ruff_lint_passes():
    """pyflakes, pycodestyle and import order (ruff.toml), as ament_flake8 would check them."""
    result = subprocess.run([tool("ruff"), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


def test_mypy_passes():
    """safefql_core's annotations hold (mypy.ini says which checks are off where, and why)."""
    result = subprocess.run([tool("mypy")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert "safefql_core" in (ROOT / "mypy.ini").read_text() and "Success" in result.stdout


@pytest.mark.slow
def test_colcon_build_installs_the_ros_layout(colcon_install, tmp_path):
    """`colcon build` of a copy of the package (conftest's colcon_install): share files where
    `ros2 launch` and the ament index look, one executable per node in lib/safefql_ros
    (`ros2 run`), and an installed package that imports from the install space."""
    prefix, env = colcon_install
    share = prefix / "share" / "safefql_ros"
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "safefql_ros").is_file()
    for path in ("package.xml", "launch/boat.launch.py", "launch/replay.launch.py", "config/boat.yaml",
                 "config/boat_nodes.yaml", "config/diagnostic_aggregator.yaml"):
        assert (share / path).is_file(), f"share/safefql_ros/{path} not installed"
    scripts = prefix / "lib" / "safefql_ros"
    for node in (*NODES, "safefql-launch"):
        assert os.access(scripts / node, os.X_OK), f"lib/safefql_ros/{node} missing or not executable"
    site = next(prefix.glob("lib/python3*/site-packages"))
    run = subprocess.run([str(scripts / "safefql-launch"), "--help"], env={**env, "PYTHONPATH": str(site)},
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "boat" in run.stdout, run.stdout + run.stderr
    # The built-in task specs are read from the task YAMLs installed with the core (package data).
    assert (site / "safefql_core" / "task_configs" / "boat.yaml").is_file()
    assert (site / "safefql_core" / "py.typed").is_file()  # its users' type checkers read its annotations
    where = subprocess.run([sys.executable, "-c", "import safefql_ros.description as d; print(d.__file__)\n"
                            "from safefql_core.tasks import TaskSpec; TaskSpec.builtin('boat')"],
                           env={**env, "PYTHONPATH": str(site)}, cwd=tmp_path, capture_output=True, text=True,
                           timeout=60)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr


def test_package_xml_declares_what_the_code_imports():
    """Every ROS package safefql_ros and the launch files import is an exec_depend, and the
    Python libraries have their rosdep keys (ROS_CONVENTIONS.md, "Packaging")."""
    depends = {e.text for e in ET.parse(ROOT / "package.xml").getroot().iter("exec_depend")}
    code = "\n".join(p.read_text() for p in [*(ROOT / "safefql_ros").glob("*.py"), *(ROOT / "launch").glob("*.py")])
    imported = set(re.findall(r"^\s*(?:from|import) (\w+(?:_msgs|_srvs|_interfaces)|rclpy|launch_ros|launch"
                              r"|ament_index_python)\b", code, re.MULTILINE))
    assert imported <= depends, f"imported but not declared in package.xml: {sorted(imported - depends)}"
    assert {"rcl_interfaces", "lifecycle_msgs", "python3-numpy", "python3-yaml", "python3-matplotlib"} <= depends
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Apache-2.0" in (ROOT / "package.xml").read_text()

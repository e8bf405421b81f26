"""The real launch files under the real `launch` / `launch_ros` (launch_testing style): the
colcon-installed package's boat.launch.py and replay.launch.py run in a LaunchService process,
as `ros2 launch` runs them, while a probe node watches the ROS graph.

`launch` and `launch_ros` are not on PyPI: on a pip-only machine these tests are skipped (the
launch files are still checked against `safefql-launch` in test_launch.py, with stand-ins).
Where a ROS 2 install (or their sources on PYTHONPATH) provides them, they run.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")


def _real_launch() -> tuple[str, ...]:
    """The directories the real `launch` and `launch_ros` import from, or a skip. The
    repository's own launch/ directory is a namespace package without LaunchService."""
    try:
        import launch
        import launch_ros.actions  # noqa: F401  (the real package, or the skip)
    except ImportError as exc:
        pytest.skip(f"launch / launch_ros are not importable ({exc}): they are not on PyPI; run this test on "
                    "a full ROS 2 install (source /opt/ros/<distro>/setup.bash)")
    if not hasattr(launch, "LaunchService"):
        pytest.skip("`launch` here is the repository's launch/ directory, not the launch package: install ROS 2")
    return tuple(str(Path(m.__file__).resolve().parents[1]) for m in (launch, sys.modules["launch_ros"]))


from geometry_msgs.msg import TwistStamped  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402

from offline_train import collect  # noqa: E402
from safefql_ros.controller import COMMAND_QOS  # noqa: E402
from safefql_ros.lifecycle_manager import lifecycle_state  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.usefixtures("ros")]

# What `ros2 launch <file> a:=b ...` does, without the ros2 command line.
ROS2_LAUNCH = """
import sys
from launch import LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
service = LaunchService(argv=sys.argv[2:])
arguments = [tuple(a.split(":=", 1)) for a in sys.argv[2:]]
service.include_launch_description(
    IncludeLaunchDescription(PythonLaunchDescriptionSource(sys.argv[1]), launch_arguments=arguments))
sys.exit(service.run())
"""


def ros2_launch(colcon_install, launch_file: str, *arguments: str, log: Path) -> subprocess.Popen:
    """The installed launch file in a LaunchService process, on the installed package."""
    prefix, env = colcon_install
    site = next(prefix.glob("lib/python3*/site-packages"))
    paths = [str(site), *_real_launch(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**env, "AMENT_PREFIX_PATH": str(prefix), "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:
        launch_path = prefix / "share" / "safefql_ros" / "launch" / launch_file
        return subprocess.Popen([sys.executable, "-c", ROS2_LAUNCH, str(launch_path), *arguments], env=env,
                                cwd=log.parent, stdout=out, stderr=subprocess.STDOUT)


def node_pids(log: Path) -> list[int]:
    return [int(p) for p in re.findall(r"process started with pid \[(\d+)\]", log.read_text())]


def test_boat_launch_file_brings_up_a_namespaced_controller(bundle, colcon_install, tmp_path):
    """boat.launch.py in namespace /lt: the lifecycle manager activates the controller, which
    commands the simulator under /lt; SIGINT (Ctrl-C) ends every node."""
    _real_launch()
    log = tmp_path / "launch.log"
    proc = ros2_launch(colcon_install, "boat.launch.py", f"bundle:={bundle}", "namespace:=lt", log=log)
    probe = Node("launch_files_probe")
    commands: list[tuple[float, float]] = []
    probe.create_subscription(TwistStamped, "/lt/boat/cmd_vel",
                              lambda m: commands.append((m.twist.linear.x, m.twist.linear.y)),
                              COMMAND_QOS)
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    try:
        deadline = time.monotonic() + 60
        while len([c for c in commands if c != (0.0, 0.0)]) < 20 and proc.poll() is None:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            executor.spin_once(timeout_sec=0.05)
        assert lifecycle_state(probe, executor, "/lt/safefql_controller", 10.0) == "active"
    finally:
        executor.remove_node(probe)
        probe.destroy_node()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    pids = node_pids(log)
    assert len(pids) == 3, log.read_text()[-3000:]
    deadline = time.monotonic() + 10  # ros2 launch may return before the kernel has reaped its nodes
    while [p for p in pids if Path(f"/proc/{p}").exists()] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if Path(f"/proc/{p}").exists()], "nodes outlived ros2 launch"


def test_replay_launch_file_loses_no_start_of_the_bag(bundle, colcon_install, tmp_path):
    """replay.launch.py starts every node at once (no ordering as in safefql-launch): the
    player waits for the controller's subscription, so about one command per played state is
    recorded, and the launch ends when the bag is done."""
    _real_launch()
    bag, output, log = tmp_path / "bag", tmp_path / "replayed", tmp_path / "launch.log"
    assert collect.main(["--task", "boat", "--format", "bag", "--episodes", "1", "--seed", "0",
                         "--out", str(bag), "--no-progress"]) == 0
    proc = ros2_launch(colcon_install, "replay.launch.py", f"bundle:={bundle}", f"bag:={bag}", f"output:={output}",
                       "rate:=2.0", log=log)
    try:
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    with AnyReader([bag]) as reader:
        states = sum(c.msgcount for c in reader.connections if c.topic == "/boat/odom")
    with AnyReader([output]) as reader:
        commands = sum(c.msgcount for c in reader.connections if c.topic == "/boat/cmd_vel")
    assert commands >= 0.7 * states, f"{commands} commands for {states} played states: {log.read_text()[-3000:]}"

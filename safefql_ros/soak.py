"""`python -m safefql_ros.soak`: the controller's start-up and a long closed loop, measured
from outside, as a robot integrator would (a benchmark, not a test; docs/BENCHMARKS.md).

It starts `boat_sim` and `safefql_controller` as processes with the shipped node parameters,
then, from its own node:
- start-up: from the controller's process start to the answer of its `configure` transition
  (bundle loaded and verified, lifecycle "inactive"), and the process's RSS then;
- soak: activates it and, for `--duration` seconds of the 200 Hz loop, records every
  `~/latency_ms` (state in -> command out, measured by the controller on the monotonic clock)
  and the arrival time of every command. A missed deadline is a state whose command came
  later than one control period after it; a command gap is a silence on the command topic
  longer than two periods (a decision that never came). RSS is sampled every 10 s.

Prints one JSON line (and writes it with `--json`). Run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import Float64

from safefql_ros.controller import COMMAND_QOS
from safefql_ros.description import bundle_task_spec, default_params_file
from safefql_ros.lifecycle_manager import LifecycleError, bring_up
from safefql_ros.node_tools import message_class

RSS_EVERY_S = 10.0


def rss_mb(pid: int) -> float:
    """Resident set size of a process, MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(module: str, *ros_args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, "--ros-args", "--params-file", str(default_params_file()),
                             *ros_args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def soak(bundle: str, duration: float, period: float) -> dict[str, Any]:
    node = rclpy.create_node("safefql_soak")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    latencies: list[float] = []
    arrivals: list[float] = []
    node.create_subscription(Float64, "/safefql_controller/latency_ms", lambda m: latencies.append(m.data), 1000)
    command = bundle_task_spec(bundle).command
    node.create_subscription(message_class(command.type), command.topic, lambda m: arrivals.append(time.monotonic()),
                             COMMAND_QOS)
    sim = start("safefql_ros.boat_sim")
    started = time.monotonic()
    controller = start("safefql_ros.controller", "-p", f"bundle:={bundle}")
    try:
        configured = _transition(node, executor, started, "configure")
        rss = [(0.0, rss_mb(controller.pid))]
        _transition(node, executor, started, "activate")
        begin = time.monotonic()
        latencies.clear()
        arrivals.clear()
        while (elapsed := time.monotonic() - begin) < duration:
            executor.spin_once(timeout_sec=0.01)
            if elapsed - rss[-1][0] >= RSS_EVERY_S:
                rss.append((elapsed, rss_mb(controller.pid)))
        rss.append((duration, rss_mb(controller.pid)))
    finally:
        for proc in (controller, sim):
            proc.terminate()
            proc.wait(timeout=30)
        node.destroy_node()
    lat, gaps = np.asarray(latencies), np.diff(np.asarray(arrivals))
    return {
        "duration_s": duration, "control_period_ms": period * 1e3,
        "start_to_inactive_s": round(configured, 3),
        "rss_mb_inactive": round(rss[0][1], 1), "rss_mb_end": round(rss[-1][1], 1),
        "rss_mb_samples": [[round(t), round(mb, 1)] for t, mb in rss[1:]],  # [s into the loop, MiB]
        "commands": len(arrivals), "latency_samples": int(lat.size),
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 3),
        "latency_ms_p99": round(float(np.percentile(lat, 99)), 3),
        "latency_ms_max": round(float(lat.max()), 3),
        "missed_deadlines": int((lat > period * 1e3).sum()),
        "command_gaps_over_2_periods": int((gaps > 2 * period).sum()),
        "longest_command_gap_ms": round(float(gaps.max()) * 1e3, 3) if gaps.size else None,
    }


def _transition(node, executor, started: float, label: str) -> float:
    """One transition of the controller; seconds since its process started."""
    try:
        bring_up(node, executor, ["/safefql_controller"], timeout=120.0, transitions=(label,))
    except LifecycleError as exc:
        raise SystemExit(f"soak: {exc}") from None
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m safefql_ros.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="policy bundle directory")
    parser.add_argument("--duration", type=float, default=600.0, help="closed-loop seconds (default 600)")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args(argv)
    period = json.loads((Path(args.bundle) / "bundle.json").read_text())["task"].get("control_period", 0.005)
    rclpy.init()
    try:
        result = soak(args.bundle, args.duration, period)
    finally:
        rclpy.try_shutdown()
    line = json.dumps(result)
    if args.json:
        Path(args.json).write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

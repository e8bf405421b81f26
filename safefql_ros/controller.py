"""`safefql_controller`: the trained policy as a ROS 2 node (ROS_CONVENTIONS.md, "Control node").

A thin adapter around `safefql_core.runtime.Runtime.decide`: the state callback only caches
the latest message and its stamp; a fixed-rate timer on the node clock (so `use_sim_time`
works; if `/clock` stops, the timer stops too and no command is sent — downstream must treat
a silent command topic as stop) asks the runtime for a decision, publishes the command and
the safety signals, and `/diagnostics` reports the latest decision at its own rate.
Every rejection (no state, stale, non-finite, wrong size) goes through the runtime's
REJECTED path, so the only commands ever sent are validated ones or the stop action.

`~/latency_ms` is the state-in → command-out time of each state's first command: from the
state callback to the publish of the command computed from it, on the monotonic clock (so it
means the same in sim time); the compute alone is `~/inference_ms`.

`trigger` picks what starts a decision. `timer` (the ROS convention): only the fixed-rate tick,
so a state waits up to one period for it — with a sensor publishing at the control rate, that
wait is a phase offset fixed at start-up, anywhere in [0, period). `state`: a fresh state is
decided on at once (at most one decision per quarter period, so a burst cannot queue work), and
the timer, re-armed by every decision, becomes a watchdog that fires only when no state came
for a whole period — same command rate and stale-state stop, without the phase lottery.

Run: `python -m safefql_ros.controller --ros-args -p bundle:=bundle/`.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from std_msgs.msg import Float64, String

from safefql_core.bundle import BundleError, load_bundle
from safefql_core.runtime import MAX_TIMEOUT_PERIODS, Decision, Mode, Runtime, RuntimeConfig
from safefql_core.tasks import TaskSpec, TaskSpecError
from safefql_ros.node_tools import float_range, int_range, message_class, optional_array, run_node
from safefql_ros.qos import LATCHED_QOS

SLOW_FRACTION = 0.5  # WARN when one decision takes more than this fraction of the period
COMMAND_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)


class Controller(Node):
    """Decides at a fixed rate; see the module docstring for the contract."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("safefql_controller", **kwargs)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        path = self.declare_parameter("bundle", "", ParameterDescriptor(
            description="Policy bundle directory (python -m offline_train.export)", read_only=True)).value
        if not path:
            raise BundleError("parameter 'bundle' is not set; pass --ros-args -p bundle:=<bundle dir>")
        task_config = self.declare_parameter("task_config", "", ParameterDescriptor(
            description="Task YAML whose spec replaces the one the bundle records, e.g. to rename topics; "
                        "refused unless it matches that spec (empty: the bundle's spec)", read_only=True)).value
        bundle = load_bundle(path)
        self.act_dim = bundle.act_dim
        self.spec = bundle.task_spec(TaskSpec.load(task_config) if task_config else None, "parameter task_config")
        # A policy trained on `collect --action-repeat K` data decides every K control periods.
        self.period = float(bundle.meta["task"].get("control_period") or self.spec.control_period) \
            * bundle.meta["task"].get("action_repeat", 1)
        self.parameter_changes: list[str] = []  # every run-time change of a safety parameter
        self._declare_parameters()
        p = self._params()
        rate = p["control_rate_hz"] or 1.0 / self.period
        self.runtime = Runtime(bundle, RuntimeConfig(
            threads=p["threads"], state_timeout=p["state_timeout"] or 2.5 * self.period, period=1.0 / rate,
            stop_action=p["stop_action"] or None, fallback_actions=p["fallback_actions"],
            candidates=p["candidates"], noise=p["noise"], seed=p["seed"], proposals=p["proposals"],
            out_of_range=p["out_of_range"]))
        if p["control_rate_hz"]:
            self.get_logger().warning(
                f"control_rate_hz overridden to {rate:g} Hz; the policy was trained at {1 / self.period:g} Hz")
        self.hardware_id = f"{self.spec.name}:{bundle.path.name}"
        self.command_cls = message_class(self.spec.command.type)
        # Only the inputs the observation needs (reward/margin inputs are for training).
        self.inputs = {name: self.spec.topic_streams()[name] for name in self.spec.state_inputs()}
        self.rows: dict[str, tuple[np.ndarray, int, int]] = {}  # input -> (raw values, stamp ns, receipt ns)
        # An input with its own max_age in the spec (a slower lidar) may be that much older than
        # state_timeout allows the others: its stamp counts this much later.
        self.allowance_ns = {name: round((self.spec.max_age_of(name) - self.spec.max_age) * 1e9) for name in self.inputs}

        # (observation, stamp ns, receipt ns) on the node clock, each of the stalest input
        self.latest: tuple[np.ndarray, int, int] | None = None
        self.received_ns: int | None = None  # monotonic receive time of `latest`, until first used
        self.cpu_mark = (time.monotonic(), time.process_time())
        self.cpu_percent = float("nan")
        self.decision: Decision | None = None
        self.state_age: float | None = None
        self.mode: Mode | None = None
        self.interventions = 0
        self.slow_ticks = 0

        for name, stream in self.inputs.items():
            self.create_subscription(message_class(stream.type), stream.topic,
                                     lambda msg, name=name: self._on_state(name, msg), qos_profile_sensor_data)
        self.cmd_pub = self.create_publisher(self.command_cls, self.spec.command.topic, COMMAND_QOS)
        self.float_pubs = {name: self.create_publisher(Float64, f"~/{name}", 10)
                           for name in ("safety/q_value", "safety/v_value", "safety/margin", "inference_ms",
                                        "latency_ms")}
        self.mode_pub = self.create_publisher(String, "~/mode", LATCHED_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.trigger = p["trigger"]
        self.min_decision_gap_ns = int(0.25e9 / rate)
        self.last_decision_ns = 0
        self.tick_timer = self.create_timer(1.0 / rate, self._tick)
        # trigger 'state': a state that comes within the gap of the last decision (a delayed one
        # and the next, delivered together) is decided when the gap has passed, not a period later.
        self.catch_up = self.create_timer(self.min_decision_gap_ns * 1e-9, self._catch_up)
        self.catch_up.cancel()
        self.create_timer(1.0 / p["diagnostics_rate_hz"], self._publish_diagnostics)
        self.get_logger().info(
            f"bundle {path} ({bundle.algo}, δ*={self.runtime.threshold:.4f}): "
            f"{', '.join(s.topic for s in self.inputs.values())} -> "
            f"{self.spec.command.topic} at {rate:g} Hz, state_timeout {self.runtime.cfg.state_timeout * 1e3:.1f} ms")

    # ---- parameters ----------------------------------------------------------------------------
    def _declare_parameters(self) -> None:
        """Everything that shapes the runtime is read-only: it is built once at start-up."""
        ro = {"read_only": True}
        self.declare_parameter("control_rate_hz", 0.0, ParameterDescriptor(
            description="Decision rate; 0 = 1 / the bundle's control period (overriding it logs a warning)",
            floating_point_range=float_range(0.0, 1000.0), **ro))
        rate = self.get_parameter("control_rate_hz").value or 1.0 / self.period
        self.declare_parameter("state_timeout", 0.0, ParameterDescriptor(
            description="A state older than this (s, node clock; by stamp and by receipt) is stale -> stop; "
                        f"0 = 2.5 control periods; at most {MAX_TIMEOUT_PERIODS} decision periods. "
                        "Every change at run time is logged at WARN and counted in /diagnostics",
            floating_point_range=float_range(0.0, MAX_TIMEOUT_PERIODS / rate)))
        self.declare_parameter("stop_action", [0.0] * self.act_dim, ParameterDescriptor(
            description="Action in [-1, 1] sent whenever the state is rejected and on shutdown", **ro))
        self.declare_parameter("trigger", "timer", ParameterDescriptor(
            description="What starts a decision: 'timer' (fixed-rate tick only) or 'state' (a fresh state "
                        "at once; the tick then only fires when states stop coming)", **ro))
        self.declare_parameter("out_of_range", "reject", ParameterDescriptor(
            description="A state outside the policy's trained observation range (widened by half its span): "
                        "'reject' sends the stop action, 'warn' decides anyway and reports WARN", **ro))
        self.declare_parameter("noise", "zero", ParameterDescriptor(
            description="Actor noise on the nominal path: 'zero' (deterministic) or 'sample'", **ro))
        self.declare_parameter("seed", 0, ParameterDescriptor(
            description="Seed of the candidate / noise sampler", integer_range=int_range(0, 2**31 - 1), **ro))
        self.declare_parameter("fallback_actions", Parameter.Type.DOUBLE_ARRAY, ParameterDescriptor(
            description="Flat list of extra candidate actions in [-1, 1], act_dim values each", **ro))
        self.declare_parameter("candidates", 8, ParameterDescriptor(
            description="Extra actor samples scored when the actor's action fails the check",
            integer_range=int_range(0, 256), **ro))
        self.declare_parameter("proposals", 1, ParameterDescriptor(
            description="Actor noises per tick; above 1 the one of highest Q_reward among those that pass "
                        "the safety check is sent (needs a bundle with proposals.onnx)",
            integer_range=int_range(1, 256), **ro))
        self.declare_parameter("threads", 1, ParameterDescriptor(
            description="Inference threads (onnxruntime)", integer_range=int_range(1, 64), **ro))
        self.declare_parameter("diagnostics_rate_hz", 2.0, ParameterDescriptor(
            description="Rate of /diagnostics reports", floating_point_range=float_range(0.1, 100.0), **ro))

    def _params(self) -> dict[str, Any]:
        names = ("control_rate_hz", "state_timeout", "stop_action", "trigger", "out_of_range", "noise", "seed",
                 "candidates", "proposals", "threads", "diagnostics_rate_hz")
        values = {n: self.get_parameter(n).value for n in names}
        values["stop_action"] = list(values["stop_action"])
        values["fallback_actions"] = optional_array(self, "fallback_actions")
        return values

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validates at declaration (overrides from the command line / YAML) and on later sets;
        ranges are checked by rclpy from the descriptors."""
        for p in params:
            why = self._invalid(p.name, p.value)
            if why:
                return SetParametersResult(successful=False, reason=f"{p.name}: {why}")
        for p in params:
            if p.name == "state_timeout" and hasattr(self, "runtime"):
                try:
                    old = self.runtime.set_state_timeout(p.value or 2.5 * self.period)
                except ValueError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
                change = f"state_timeout {old:g} s -> {self.runtime.cfg.state_timeout:g} s"
                self.parameter_changes.append(change)
                self.get_logger().warning(f"safety parameter changed at run time: {change}")
        return SetParametersResult(successful=True)

    def _invalid(self, name: str, value: Any) -> str:
        if name == "noise" and value not in ("zero", "sample"):
            return f"must be 'zero' or 'sample', got {value!r}"
        if name == "trigger" and value not in ("timer", "state"):
            return f"must be 'timer' or 'state', got {value!r}"
        if name == "out_of_range" and value not in ("reject", "warn"):
            return f"must be 'reject' or 'warn', got {value!r}"
        if name in ("stop_action", "fallback_actions") and value is not None:
            values = list(value)
            if name == "stop_action" and len(values) != self.act_dim:
                return f"needs {self.act_dim} values (one action), got {len(values)}"
            if len(values) % self.act_dim:
                return f"needs a multiple of act_dim={self.act_dim} values, got {len(values)}"
            if not all(math.isfinite(v) and abs(v) <= 1.0 for v in values):
                return f"values must be finite and in [-1, 1], got {values}"
        return ""

    # ---- state and tick ------------------------------------------------------------------------
    def _on_state(self, name: str, msg: Any) -> None:
        """Cache the input's values (the spec's feature extraction, the converter's code); once
        every input has spoken, the observation and the stamp of its stalest input (stamps
        shifted by each input's extra max_age in the spec), so the state is stale as soon as
        one part is. The tick does the work. With trigger 'state'
        a message of the first input runs the tick now, or, if one ran less than a quarter
        period ago, once that much time has passed (a burst of states never queues decisions)."""
        now_ns = self.get_clock().now().nanoseconds
        stream = self.inputs[name]
        try:
            self.rows[name] = (stream.read(msg), stream.stamp_ns(msg, now_ns), now_ns)
        except TaskSpecError as exc:  # e.g. a JointState without the joint: no state, so the stop action
            self.get_logger().error(f"{stream.topic}: {exc}", throttle_duration_sec=1.0)
            return
        if len(self.rows) < len(self.inputs):
            return
        self.received_ns = time.monotonic_ns()
        observation = self.spec.observations({n: row[None] for n, (row, _, _) in self.rows.items()})[0]
        self.latest = (observation,
                       min(stamp + self.allowance_ns[n] for n, (_, stamp, _) in self.rows.items()),
                       min(receipt + self.allowance_ns[n] for n, (_, _, receipt) in self.rows.items()))
        if self.trigger != "state" or name != next(iter(self.inputs)):
            return
        if self.received_ns - self.last_decision_ns >= self.min_decision_gap_ns:
            self._decide_now()
        else:
            self.catch_up.reset()

    def _catch_up(self) -> None:
        if self.received_ns is None:  # the cached state already had its decision
            self.catch_up.cancel()
        else:
            self._decide_now()

    def _decide_now(self) -> None:
        """A state-triggered decision: drop a pending catch-up and re-arm the watchdog tick (the
        timer path needs neither: a catch-up fires within half a period of a decision)."""
        self.catch_up.cancel()
        self.tick_timer.reset()
        self._tick()

    def _tick(self) -> None:
        self.last_decision_ns = time.monotonic_ns()
        obs, age, received_age = None, None, None
        if self.latest is not None:
            obs, stamp, received = self.latest
            now_ns = self.get_clock().now().nanoseconds
            age, received_age = (now_ns - stamp) * 1e-9, (now_ns - received) * 1e-9
        self.state_age = age
        decision = self.runtime.decide(obs, age, received_age)
        try:
            command = self.spec.fill_command(self.command_cls(), decision.action)
        except TaskSpecError as exc:  # a non-finite network output: never sent
            decision = Decision(self.runtime.stop_action.copy(), Mode.UNSAFE, str(exc), decision.q_safe,
                                decision.v_safe, decision.threshold, decision.inference_ms)
            command = self.stop_command()
        self.cmd_pub.publish(command)
        if self.received_ns is not None and decision.mode != Mode.REJECTED:
            self.float_pubs["latency_ms"].publish(Float64(data=(time.monotonic_ns() - self.received_ns) * 1e-6))
            self.received_ns = None
        self._record(decision)

    def stop_command(self) -> Any:
        return self.spec.fill_command(self.command_cls(), self.runtime.stop_action)

    def _record(self, d: Decision) -> None:
        self.decision = d
        if d.mode in (Mode.INTERVENE, Mode.UNSAFE):
            self.interventions += 1
        if d.inference_ms > SLOW_FRACTION * self.period * 1e3:
            self.slow_ticks += 1
        for name, value in (("safety/q_value", d.q_safe), ("safety/v_value", d.v_safe),
                            ("safety/margin", d.margin), ("inference_ms", d.inference_ms)):
            self.float_pubs[name].publish(Float64(data=float(value)))
        if d.mode != self.mode:
            self.mode = d.mode
            self.mode_pub.publish(String(data=d.mode.value))
            # rclpy pins one severity to each logging call site: two call sites, not one chosen call.
            if d.mode == Mode.NOMINAL:
                self.get_logger().info(f"mode {d.mode.value}")
            else:
                self.get_logger().warning(f"mode {d.mode.value}: {d.reason}")

    # ---- diagnostics ---------------------------------------------------------------------------
    def diagnostic_status(self) -> DiagnosticStatus:
        """The latest decision as one status: level, reason and the documented key values."""
        status = DiagnosticStatus(name=f"{self.get_name()}: policy", hardware_id=self.hardware_id)
        d = self.decision
        if d is None:
            status.level, status.message = DiagnosticStatus.STALE, "no decision yet (control timer has not run)"
            return status
        slow_ms = SLOW_FRACTION * self.period * 1e3
        if d.mode in (Mode.UNSAFE, Mode.REJECTED):
            status.level, status.message = DiagnosticStatus.ERROR, f"{d.mode.value}: {d.reason}"
        elif d.mode == Mode.INTERVENE:
            status.level, status.message = DiagnosticStatus.WARN, f"{d.mode.value}: {d.reason}"
        elif d.reason:  # a decision sent with a warning (out_of_range 'warn')
            status.level, status.message = DiagnosticStatus.WARN, f"{d.mode.value}: {d.reason}"
        elif d.inference_ms > slow_ms:
            status.level = DiagnosticStatus.WARN
            status.message = f"inference took {d.inference_ms:.2f} ms > {slow_ms:.2f} ms (50% of the period)"
        else:
            status.level, status.message = DiagnosticStatus.OK, d.mode.value
        age_ms = float("nan") if self.state_age is None else self.state_age * 1e3
        values = {"q_safe": d.q_safe, "threshold": d.threshold, "margin": d.margin, "state_age_ms": age_ms,
                  "inference_ms": d.inference_ms, "mode": d.mode.value, "interventions": self.interventions,
                  "slow_ticks": self.slow_ticks, "cpu_percent": self.cpu_percent,
                  "state_timeout_ms": self.runtime.cfg.state_timeout * 1e3,
                  "parameter_changes": len(self.parameter_changes),
                  "last_parameter_change": self.parameter_changes[-1] if self.parameter_changes else "none"}
        status.values = [KeyValue(key=k, value=f"{v:.6g}" if isinstance(v, float) else str(v))
                         for k, v in values.items()]
        return status

    def _update_cpu(self) -> None:
        """This process's CPU use since the last report, in % of one core."""
        wall, cpu = time.monotonic(), time.process_time()
        if wall > self.cpu_mark[0]:
            self.cpu_percent = 100.0 * (cpu - self.cpu_mark[1]) / (wall - self.cpu_mark[0])
        self.cpu_mark = (wall, cpu)

    def _publish_diagnostics(self) -> None:
        self._update_cpu()
        msg = DiagnosticArray(status=[self.diagnostic_status()])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)

    def publish_final_stop(self, timeout: float = 1.0) -> None:
        """The last command before shutdown: stop, and wait (bounded) for reliable delivery."""
        self.cmd_pub.publish(self.stop_command())
        self.cmd_pub.wait_for_all_acked(Duration(seconds=timeout))
        self.get_logger().info("published the final stop command")


def main(args: list[str] | None = None) -> int:
    """Console entry point; exit status 1 with a clear message when the bundle is unusable.

    SIGINT/SIGTERM set a flag that the spin loop checks every 0.1 s of wall time, then the
    final stop goes out (see `stop_on_signals` for why not an exception).
    """
    return run_node("safefql_controller", Controller, args, (BundleError, TaskSpecError),
                    finish=Controller.publish_final_stop)


if __name__ == "__main__":
    sys.exit(main())

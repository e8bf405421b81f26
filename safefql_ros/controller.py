"""`safefql_controller`: the trained policy as a managed ROS 2 node (ROS_CONVENTIONS.md,
"Control node"), a lifecycle node as Nav2 and ros2_control expect:

- configure: load and verify the bundle, build the runtime, create the state subscription,
  the command and signal publishers and the control timer;
- activate: start deciding;
- deactivate: send the stop action and hold it — an inactive controller commands the stop at
  its control rate (also between configure and the first activate), so a driver with a
  command watchdog sees a held stop, never silence followed by a stale command;
- cleanup: drop the bundle and everything configure made (back to unconfigured);
- shutdown (and SIGINT/SIGTERM): a final stop, then exit.

`safefql_lifecycle_manager` (started by the launch files and `safefql-launch`, autostart on)
drives configure and activate, as Nav2's lifecycle manager does; `ros2 lifecycle set` works too.

A thin adapter around `safefql_core.runtime.Runtime.decide`: the state callbacks only cache
each input's latest values, stamp and receipt time (`read_input`, the one place a state
message becomes the runtime's input, including the REP 105 frame check; the features are the
spec's, the converter's code); a fixed-rate timer on the node clock (so
`use_sim_time` works; if `/clock` stops, the timer stops too and no command is sent —
downstream must treat a silent command topic as stop) asks the runtime for a decision and
publishes the command (`safefql_ros.command`: Twist, TwistStamped or an actuator array, as
the spec says) and the safety signals. `/diagnostics` runs on the steady clock, so it keeps
reporting when `/clock` stops (STALE, "no /clock") and in every lifecycle state.
Every rejection (no state, stale or from the future by stamp or by receipt, non-finite, out of
the trained range, wrong frame) goes through the
REJECTED path, so the only commands ever sent are validated ones or the stop action.

Topics are relative to the node's namespace (`boat/odom` from the spec's `/boat/odom`), so
`namespace:=robot1` isolates a robot; `/diagnostics` is the one global topic.

`~/latency_ms` is the state-in → command-out time of each state's first command: from the
state callback to the publish of the command computed from it, on the monotonic clock (so it
means the same in sim time); the compute alone is `~/inference_ms`.

`trigger` picks what starts a decision. `timer` (the ROS convention): only the fixed-rate tick,
so a state waits up to one period for it — with a sensor publishing at the control rate, that
wait is a phase offset fixed at start-up, anywhere in [0, period). `state`: a fresh state is
decided on at once (at most one decision per quarter period, so a burst cannot queue work), and
the timer, re-armed by every decision, becomes a watchdog that fires only when no state came
for a whole period — same command rate and stale-state stop, without the phase lottery.

Run: `python -m safefql_ros.controller --ros-args -p bundle:=bundle/`, then configure and
activate it (`python -m safefql_ros.lifecycle_manager --ros-args -p node_names:=[safefql_controller]`).
"""
from __future__ import annotations

import math
import sys
import time
from typing import Any, NamedTuple

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from std_msgs.msg import Float64, String

from safefql_core.bundle import BundleError, load_bundle
from safefql_core.runtime import MAX_TIMEOUT_PERIODS, Decision, Mode, Runtime, RuntimeConfig, combined_age
from safefql_core.tasks import TaskSpec, TaskSpecError
from safefql_ros.command import CommandWriter
from safefql_ros.node_tools import (
    ManagedNode,
    MessageTypeError,
    float_range,
    int_range,
    message_class,
    optional_array,
    optional_value,
    relative,
    run_node,
)
from safefql_ros.qos import LATCHED_QOS

SLOW_FRACTION = 0.5  # WARN when one decision takes more than this fraction of the period
COMMAND_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
WARN_THROTTLE_S = 1.0  # at most one "mode ..." WARN per second; diagnostics count every tick
INACTIVE = "INACTIVE"  # the ~/mode value while configured but not active (holding the stop)
FLOAT_TOPICS = ("safety/q_value", "safety/v_value", "safety/margin", "inference_ms", "latency_ms")


class InputSample(NamedTuple):
    """One input's latest message as the tick needs it: its values, stamp and receipt time (ns,
    node clock) and, when the message itself cannot be trusted (wrong frame), why."""

    values: np.ndarray
    stamp_ns: int
    received_ns: int
    invalid: str = ""


class Controller(ManagedNode):
    """Decides at a fixed rate while active; see the module docstring for the contract."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("safefql_controller", **kwargs)

    def setup(self) -> None:
        """Parameters and diagnostics; the bundle and the rest wait for configure."""
        self.act_dim: int | None = None  # known once a bundle is loaded (configure)
        self.runtime: Runtime | None = None
        self.active = False
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.declare_parameter("bundle", "", ParameterDescriptor(
            description="Policy bundle directory (python -m offline_train.export)", read_only=True))
        self.declare_parameter("task_config", "", ParameterDescriptor(
            description="Task YAML whose spec replaces the one the bundle records, e.g. to rename topics; "
                        "refused unless it matches that spec (empty: the bundle's spec)", read_only=True))
        self.parameter_changes: list[str] = []  # every run-time change of a safety parameter
        self._declare_parameters()
        self.use_sim_time = bool(self.get_parameter("use_sim_time").value)
        # Diagnostics on the steady clock, from construction on: they report every lifecycle
        # state, and keep reporting (STALE) when a sim clock stops or never starts.
        self.steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0 / self.get_parameter("diagnostics_rate_hz").value, self._publish_diagnostics,
                          clock=self.steady)
        self.cpu_mark = (time.monotonic(), time.process_time())
        self.cpu_percent = float("nan")
        self.ros_time_seen = -1  # the node clock at the last report: unchanged under sim time = no /clock
        self.hardware_id = "unconfigured"
        self._reset_decisions()

    def _reset_decisions(self) -> None:
        self.rows: dict[str, InputSample] = {}  # input name -> its latest message
        self.latest: list[InputSample] | None = None  # every input, in spec order, once all have spoken
        self.received_ns: int | None = None  # monotonic receive time of `latest`, until first used
        self.decision: Decision | None = None
        self.state_age: float | None = None
        self.mode: str | None = None
        self.interventions = 0
        self.slow_ticks = 0
        self.period_counts = dict.fromkeys(("ticks", "rejected", "intervened"), 0)  # since the last report
        self.warned: dict[str, tuple[float, int]] = {}  # mode -> (monotonic time of its last WARN, unlogged since)

    # ---- lifecycle -----------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load and verify the bundle and build everything the decision needs; a bundle or
        spec that cannot be used fails the transition (back to unconfigured) with the reason."""
        try:
            self._configure()
        except (BundleError, TaskSpecError, MessageTypeError, ValueError) as exc:
            self.get_logger().error(f"cannot configure: {exc}")
            self._destroy_configured()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = True
        self.get_logger().info("active: deciding")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._hold_stop()
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_configured()
        self.get_logger().info("cleaned up: no bundle loaded")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.runtime is not None:
            self.publish_final_stop()
        self._destroy_configured()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.runtime is not None:
            self._hold_stop()
        return TransitionCallbackReturn.SUCCESS

    def _hold_stop(self) -> None:
        """Leave the active state: send the stop now; the tick keeps sending it while inactive."""
        self.active = False
        self.cmd_pub.publish(self.stop_command())
        self._publish_mode(INACTIVE, "inactive: holding the stop action")

    def _configure(self) -> None:
        path = self.get_parameter("bundle").value
        if not path:
            raise BundleError("parameter 'bundle' is not set; pass --ros-args -p bundle:=<bundle dir>")
        bundle = load_bundle(path)
        self.act_dim = bundle.act_dim
        task_config = self.get_parameter("task_config").value
        self.spec = bundle.task_spec(TaskSpec.load(task_config) if task_config else None, "parameter task_config")
        # A policy trained on `collect --action-repeat K` data decides every K control periods.
        self.period = float(bundle.meta["task"].get("control_period") or self.spec.control_period) \
            * bundle.meta["task"].get("action_repeat", 1)
        p = self._params()
        for name in ("stop_action", "fallback_actions"):  # their sizes need the bundle's act_dim
            why = self._invalid(name, p[name])
            if why:
                raise ValueError(f"parameter {name}: {why}")
        rate = p["control_rate_hz"] or 1.0 / self.period
        # Unset decision parameters (no or an empty action list, candidates -1, proposals 0,
        # noise '') are the bundle's; the runtime refuses others unless override_decision is true.
        decision = bundle.decision.with_changes(
            stop_action=p["stop_action"] or None, fallback_actions=p["fallback_actions"] or None,
            candidates=None if p["candidates"] < 0 else p["candidates"], proposals=p["proposals"] or None,
            noise=p["noise"] or None)
        self.runtime = Runtime(bundle, RuntimeConfig(
            threads=p["threads"], state_timeout=p["state_timeout"] or 2.5 * self.period, period=1.0 / rate,
            decision=decision, override_decision=p["override_decision"], seed=p["seed"],
            out_of_range=p["out_of_range"], threshold=p["threshold"]))
        if p["threshold"] is not None:
            self.get_logger().warning(f"threshold overridden: δ*={self.runtime.threshold:.4f} in place of the "
                                      f"bundle's calibrated {bundle.threshold:.4f}")
        for warning in self.runtime.warnings:
            self.get_logger().warning(f"bundle {path}: {warning}")
        if p["control_rate_hz"]:
            self.get_logger().warning(
                f"control_rate_hz overridden to {rate:g} Hz; the policy was trained at {1 / self.period:g} Hz")
        self.hardware_id = f"{self.spec.name}:{bundle.path.name}"
        self.write_command = CommandWriter(self.spec)
        self._reset_decisions()
        # Only the inputs the observation needs (reward/margin inputs are for training).
        self.inputs = {name: self.spec.topic_streams()[name] for name in self.spec.state_inputs()}
        # An input with its own max_age in the spec (a slower lidar) may be that much older than
        # state_timeout allows the others (runtime.combined_age).
        self.allowances = [self.spec.max_age_of(name) - self.spec.max_age for name in self.inputs]
        ns = self.get_namespace()
        self.state_subs = [self.create_subscription(message_class(stream.type), relative(stream.topic, ns),
                                                    lambda msg, name=name: self._on_state(name, msg),
                                                    qos_profile_sensor_data)
                           for name, stream in self.inputs.items()]
        self.cmd_pub = self.create_publisher(self.write_command.cls, relative(self.spec.command.topic, ns), COMMAND_QOS)
        self.float_pubs = {name: self.create_publisher(Float64, f"~/{name}", 10) for name in FLOAT_TOPICS}
        self.mode_pub = self.create_publisher(String, "~/mode", LATCHED_QOS)
        self.trigger = p["trigger"]
        self.min_decision_gap_ns = int(0.25e9 / rate)
        self.last_decision_ns = 0
        self.tick_timer = self.create_timer(1.0 / rate, self._tick)
        # trigger 'state': a state that comes within the gap of the last decision (a delayed one
        # and the next, delivered together) is decided when the gap has passed, not a period later.
        self.catch_up = self.create_timer(self.min_decision_gap_ns * 1e-9, self._catch_up)
        self.catch_up.cancel()
        self._publish_mode(INACTIVE, "configured: holding the stop action until activated")
        self.get_logger().info(
            f"bundle {path} ({bundle.algo}, δ*={self.runtime.threshold:.4f}): "
            f"{', '.join(self.resolve_topic_name(relative(s.topic, ns)) for s in self.inputs.values())} -> "
            f"{self.resolve_topic_name(relative(self.spec.command.topic, ns))} "
            f"({self.spec.command.type}) at {rate:g} Hz, state_timeout {self.runtime.cfg.state_timeout * 1e3:.1f} ms")

    def _destroy_configured(self) -> None:
        """Undo `_configure` (whatever part of it ran): the node is unconfigured again."""
        self.active = False
        for name in ("tick_timer", "catch_up"):
            if hasattr(self, name):
                self.destroy_timer(getattr(self, name))
                delattr(self, name)
        for sub in getattr(self, "state_subs", []):
            self.destroy_subscription(sub)
        self.state_subs = []
        for publisher in [getattr(self, "cmd_pub", None), getattr(self, "mode_pub", None),
                          *getattr(self, "float_pubs", {}).values()]:
            if publisher is not None:
                self.destroy_publisher(publisher)
        for name in ("cmd_pub", "mode_pub", "float_pubs"):
            if hasattr(self, name):
                delattr(self, name)
        self.runtime, self.act_dim, self.hardware_id = None, None, "unconfigured"
        self._reset_decisions()

    # ---- parameters ----------------------------------------------------------------------------
    def _declare_parameters(self) -> None:
        """Everything that shapes the runtime is read-only: it is built at configure."""
        ro = {"read_only": True}
        self.declare_parameter("control_rate_hz", 0.0, ParameterDescriptor(
            description="Decision rate; 0 = 1 / the bundle's control period (overriding it logs a warning)",
            floating_point_range=float_range(0.0, 1000.0), **ro))
        self.declare_parameter("state_timeout", 0.0, ParameterDescriptor(
            description="A state older than this (s, node clock; by stamp and by receipt) is stale -> stop; "
                        f"0 = 2.5 control periods; at most {MAX_TIMEOUT_PERIODS} decision periods (checked at "
                        "configure and on every change). Every change at run time is logged at WARN and "
                        "counted in /diagnostics",
            floating_point_range=float_range(0.0, 10.0)))
        self.declare_parameter("stop_action", Parameter.Type.DOUBLE_ARRAY, ParameterDescriptor(
            description="Action in [-1, 1] sent whenever the state is rejected, while inactive and on "
                        "shutdown; unset: the bundle's decision's (another one needs override_decision)", **ro))
        self.declare_parameter("trigger", "timer", ParameterDescriptor(
            description="What starts a decision: 'timer' (fixed-rate tick only) or 'state' (a fresh state "
                        "at once; the tick then only fires when states stop coming)", **ro))
        self.declare_parameter("out_of_range", "reject", ParameterDescriptor(
            description="A state outside the policy's trained observation range (widened by half its span): "
                        "'reject' sends the stop action, 'warn' decides anyway and reports WARN", **ro))
        self.declare_parameter("noise", "", ParameterDescriptor(
            description="Actor noise on the nominal path: 'zero' (deterministic) or 'sample'; '' = the bundle's "
                        "decision (any other value that differs from it needs override_decision)", **ro))
        self.declare_parameter("seed", 0, ParameterDescriptor(
            description="Seed of the candidate / noise sampler", integer_range=int_range(0, 2**31 - 1), **ro))
        self.declare_parameter("fallback_actions", Parameter.Type.DOUBLE_ARRAY, ParameterDescriptor(
            description="Flat list of extra candidate actions in [-1, 1], act_dim values each; unset: the "
                        "bundle's decision (other ones need override_decision)", **ro))
        self.declare_parameter("candidates", -1, ParameterDescriptor(
            description="Extra actor samples scored when the actor's action fails the check; -1 = the bundle's "
                        "decision (another value needs override_decision)",
            integer_range=int_range(-1, 256), **ro))
        self.declare_parameter("proposals", 0, ParameterDescriptor(
            description="Actor noises per tick; above 1 the one of highest Q_reward among those that pass "
                        "the safety check is sent; 0 = the bundle's decision (another value needs "
                        "override_decision)", integer_range=int_range(0, 256), **ro))
        self.declare_parameter("override_decision", False, ParameterDescriptor(
            description="Allow decision parameters (stop_action, fallback_actions, candidates, proposals, noise) "
                        "that differ from the bundle's decision, whose δ* certifies only its own; logged at WARN",
            **ro))
        self.declare_parameter("threshold", Parameter.Type.DOUBLE, ParameterDescriptor(
            description="δ* in place of the bundle's calibrated one (unset: the bundle's). A value chosen "
                        "on validation episodes, not calibrated: the bundle's coverage statement no longer "
                        "holds. Must lie in the bundle's threshold range (checked at configure)", **ro))
        self.declare_parameter("threads", 1, ParameterDescriptor(
            description="Inference threads (onnxruntime)", integer_range=int_range(1, 64), **ro))
        self.declare_parameter("diagnostics_rate_hz", 2.0, ParameterDescriptor(
            description="Rate of /diagnostics reports (steady clock)", floating_point_range=float_range(0.1, 100.0),
            **ro))

    def _params(self) -> dict[str, Any]:
        names = ("control_rate_hz", "state_timeout", "trigger", "out_of_range", "noise", "seed", "candidates",
                 "proposals", "override_decision", "threads")
        values = {n: self.get_parameter(n).value for n in names}
        values["stop_action"] = optional_array(self, "stop_action")
        values["fallback_actions"] = optional_array(self, "fallback_actions")
        values["threshold"] = optional_value(self, "threshold")
        return values

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validates at declaration (overrides from the command line / YAML) and on later sets;
        ranges are checked by rclpy from the descriptors. Action sizes are checked against the
        bundle at configure, once its act_dim is known."""
        for p in params:
            why = self._invalid(p.name, p.value)
            if why:
                return SetParametersResult(successful=False, reason=f"{p.name}: {why}")
        for p in params:
            if p.name == "state_timeout" and self.runtime is not None:
                try:
                    old = self.runtime.set_state_timeout(p.value or 2.5 * self.period)
                except ValueError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
                change = f"state_timeout {old:g} s -> {self.runtime.cfg.state_timeout:g} s"
                self.parameter_changes.append(change)
                self.get_logger().warning(f"safety parameter changed at run time: {change}")
        return SetParametersResult(successful=True)

    def _invalid(self, name: str, value: Any) -> str:
        if name == "noise" and value not in ("", "zero", "sample"):
            return f"must be 'zero', 'sample' or '' (the bundle's), got {value!r}"
        if name == "trigger" and value not in ("timer", "state"):
            return f"must be 'timer' or 'state', got {value!r}"
        if name == "out_of_range" and value not in ("reject", "warn"):
            return f"must be 'reject' or 'warn', got {value!r}"
        if name in ("stop_action", "fallback_actions") and value is not None:
            values = list(value)
            if not all(math.isfinite(v) and abs(v) <= 1.0 for v in values):
                return f"values must be finite and in [-1, 1], got {values}"
            if self.act_dim is None:
                return ""
            if name == "stop_action" and values and len(values) != self.act_dim:
                return f"needs {self.act_dim} values (one action), got {len(values)}"
            if len(values) % self.act_dim:
                return f"needs a multiple of act_dim={self.act_dim} values, got {len(values)}"
        return ""

    # ---- state and tick ------------------------------------------------------------------------
    def read_input(self, name: str, msg: Any) -> InputSample:
        """One input's message as the runtime's input: its values (the spec's features), stamp
        and receipt time and, for a message in another frame than the input's `frame_id`
        (REP 105), why it is refused."""
        now_ns = self.get_clock().now().nanoseconds
        stream = self.inputs[name]
        invalid = ""
        if stream.frame_id and msg.header.frame_id != stream.frame_id:
            invalid = (f"state frame_id is '{msg.header.frame_id}', the task spec expects '{stream.frame_id}' "
                       f"(publish {stream.topic} in that frame, or fix inputs.{name}.frame_id)")
        return InputSample(stream.read(msg), stream.stamp_ns(msg, now_ns), now_ns, invalid)

    def _on_state(self, name: str, msg: Any) -> None:
        """Cache the input; once every input has spoken the tick has a state, judged as a whole
        (runtime.combined_age: stale as soon as one part is). The tick does the work. With
        trigger 'state' a message of the first input runs the tick now, or, if one ran less
        than a quarter period ago, once that much time has passed (a burst of states never
        queues decisions)."""
        try:
            self.rows[name] = self.read_input(name, msg)
        except TaskSpecError as exc:  # e.g. a JointState without the joint: no state, so the stop action
            self.get_logger().error(f"{self.inputs[name].topic}: {exc}", throttle_duration_sec=1.0)
            return
        if len(self.rows) < len(self.inputs):
            return
        self.received_ns = time.monotonic_ns()
        self.latest = [self.rows[n] for n in self.inputs]
        if self.trigger != "state" or not self.active or name != next(iter(self.inputs)):
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
        if not self.active:  # configured but inactive: hold the stop
            self.cmd_pub.publish(self.stop_command())
            return
        self.last_decision_ns = time.monotonic_ns()
        self.state_age = None
        invalid = [sample.invalid for sample in self.latest or [] if sample.invalid]
        if invalid:
            decision = self._stopped(Mode.REJECTED, invalid[0])
        else:
            obs, received_age = None, None
            if self.latest is not None:
                obs = self.spec.observations({n: s.values[None] for n, s in zip(self.inputs, self.latest)})[0]
                now_ns = self.get_clock().now().nanoseconds
                tolerance = self.runtime.cfg.future_tolerance
                self.state_age, received_age = (
                    combined_age([(now_ns - t) * 1e-9 for t in times], self.allowances, tolerance)
                    for times in ([s.stamp_ns for s in self.latest], [s.received_ns for s in self.latest]))
            decision = self.runtime.decide(obs, self.state_age, received_age)
        try:
            command = self.write_command(decision.action, self.get_clock().now().nanoseconds)
        except TaskSpecError as exc:  # a non-finite network output: never sent
            decision = self._stopped(Mode.UNSAFE, str(exc), decision)
            command = self.stop_command()
        self.cmd_pub.publish(command)
        if self.received_ns is not None and decision.mode != Mode.REJECTED:
            self.float_pubs["latency_ms"].publish(Float64(data=(time.monotonic_ns() - self.received_ns) * 1e-6))
            self.received_ns = None
        self._record(decision)

    def _stopped(self, mode: Mode, reason: str, base: Decision | None = None) -> Decision:
        """A decision that sends the stop action, keeping `base`'s safety values where there is one."""
        nan = float("nan")
        return Decision(self.runtime.stop_action.copy(), mode, reason, base.q_safe if base else nan,
                        base.v_safe if base else nan, self.runtime.threshold, base.inference_ms if base else 0.0)

    def stop_command(self) -> Any:
        return self.write_command(self.runtime.stop_action, self.get_clock().now().nanoseconds)

    def _record(self, d: Decision) -> None:
        self.decision = d
        counts = self.period_counts
        counts["ticks"] += 1
        if d.mode == Mode.REJECTED:
            counts["rejected"] += 1
        if d.mode in (Mode.INTERVENE, Mode.UNSAFE):
            self.interventions += 1
            counts["intervened"] += 1
        if d.inference_ms > SLOW_FRACTION * self.period * 1e3:
            self.slow_ticks += 1
        for name, value in (("safety/q_value", d.q_safe), ("safety/v_value", d.v_safe),
                            ("safety/margin", d.margin), ("inference_ms", d.inference_ms)):
            self.float_pubs[name].publish(Float64(data=float(value)))
        if d.mode.value != self.mode:
            self._publish_mode(d.mode.value, d.reason)

    def _publish_mode(self, mode: str, reason: str) -> None:
        """Latch the new mode and log it. Under load the mode can flip many times a second:
        a WARN for a mode is logged at most once per WARN_THROTTLE_S, saying how many changes
        to it went unlogged (the diagnostics count every tick); the first one always shows."""
        self.mode = mode
        self.mode_pub.publish(String(data=mode))
        # rclpy pins one severity to each logging call site: two call sites, not one chosen call.
        if mode == Mode.NOMINAL.value:
            self.get_logger().info(f"mode {mode}")
            return
        now = time.monotonic()
        last, unlogged = self.warned.get(mode, (-math.inf, 0))
        if now - last < WARN_THROTTLE_S:
            self.warned[mode] = (last, unlogged + 1)
            return
        more = f" ({unlogged} more changes to {mode} not logged)" if unlogged else ""
        self.get_logger().warning(f"mode {mode}: {reason}{more}")
        self.warned[mode] = (now, 0)

    # ---- diagnostics ---------------------------------------------------------------------------
    def diagnostic_status(self) -> DiagnosticStatus:
        """The controller as one status: level, reason and the documented key values, plus
        the ticks of the last report period that were rejected or intervened."""
        status = DiagnosticStatus(name=f"{self.get_name()}: policy", hardware_id=self.hardware_id)
        now_ns = self.get_clock().now().nanoseconds
        clock_stopped = self.use_sim_time and now_ns == self.ros_time_seen
        self.ros_time_seen = now_ns
        counts, self.period_counts = self.period_counts, dict.fromkeys(self.period_counts, 0)
        values: dict[str, Any] = {"lifecycle": self._state_machine.current_state[1], "cpu_percent": self.cpu_percent}
        d = self.decision
        if self.runtime is None:
            status.level, status.message = DiagnosticStatus.STALE, "unconfigured: no bundle loaded"
        elif clock_stopped:
            status.level = DiagnosticStatus.STALE
            status.message = "no /clock: use_sim_time is set and the sim clock does not advance; no decisions"
        elif not self.active:
            status.level, status.message = DiagnosticStatus.WARN, "inactive: holding the stop action"
        elif d is None:
            status.level, status.message = DiagnosticStatus.STALE, "no decision yet (control timer has not run)"
        else:
            status.level, status.message = self._decision_level(d)
        if d is not None:
            age_ms = float("nan") if self.state_age is None else self.state_age * 1e3
            values.update({"q_safe": d.q_safe, "threshold": d.threshold, "margin": d.margin, "state_age_ms": age_ms,
                           "inference_ms": d.inference_ms, "mode": d.mode.value})
        if self.runtime is not None:
            values.update({"interventions": self.interventions, "slow_ticks": self.slow_ticks,
                           "ticks_in_period": counts["ticks"], "rejected_in_period": counts["rejected"],
                           "intervened_in_period": counts["intervened"],
                           "state_timeout_ms": self.runtime.cfg.state_timeout * 1e3})
        values.update({"parameter_changes": len(self.parameter_changes),
                       "last_parameter_change": self.parameter_changes[-1] if self.parameter_changes else "none"})
        status.values = [KeyValue(key=k, value=f"{v:.6g}" if isinstance(v, float) else str(v))
                         for k, v in values.items()]
        return status

    def _decision_level(self, d: Decision) -> tuple[int, str]:
        slow_ms = SLOW_FRACTION * self.period * 1e3
        if d.mode in (Mode.UNSAFE, Mode.REJECTED):
            return DiagnosticStatus.ERROR, f"{d.mode.value}: {d.reason}"
        if d.mode == Mode.INTERVENE:
            return DiagnosticStatus.WARN, f"{d.mode.value}: {d.reason}"
        if d.reason:  # a decision sent with a warning (out_of_range 'warn')
            return DiagnosticStatus.WARN, f"{d.mode.value}: {d.reason}"
        if d.inference_ms > slow_ms:
            return DiagnosticStatus.WARN, \
                f"inference took {d.inference_ms:.2f} ms > {slow_ms:.2f} ms (50% of the period)"
        return DiagnosticStatus.OK, d.mode.value

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
        """The last command before shutdown: stop, and wait (bounded) for reliable delivery.
        An unconfigured node has no command topic (no spec): nothing to send."""
        if self.runtime is None:
            return
        self.active = False
        self.cmd_pub.publish(self.stop_command())
        self.cmd_pub.wait_for_all_acked(Duration(seconds=timeout))
        self.get_logger().info("published the final stop command")


def main(args: list[str] | None = None) -> int:
    """Console entry point: the node starts unconfigured (a lifecycle manager or `ros2
    lifecycle set` configures and activates it); exit status 1 when a parameter is unusable.

    SIGINT/SIGTERM set a flag that the spin loop checks every 0.1 s of wall time, then the
    final stop goes out (see `stop_on_signals` for why not an exception).
    """
    return run_node("safefql_controller", Controller, args, (BundleError, TaskSpecError),
                    finish=Controller.publish_final_stop)


if __name__ == "__main__":
    sys.exit(main())

"""The per-tick decision (ARCHITECTURE.md, "Runtime decision"): the one place it lives.

validate state -> propose (one actor pass) -> calibrated check Q_safe < δ* -> otherwise
score candidates (other actor noises + configured fallback actions) and send the safest.
With `proposals` N > 1 the proposal is the best of N actor noises in one batched pass: the
highest conservative Q_reward among those with Q_safe < δ* (docs/DESIGN.md, "Proposals").
The ROS node, replay, offline evaluation and calibration all call `Runtime.decide`, with the
settings the bundle records (`safefql_core.decision`); nothing else re-implements it.
Backends: onnxruntime (default, what runs on the robot) and torch (the learner rebuilt
from the bundle's weights, for debugging and for the latency comparison).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple, Protocol

import numpy as np

from safefql_core.bundle import LEGACY_CERTIFIES, Bundle, BundleError, load_bundle, ort_session
from safefql_core.ddpm import reverse_chain, vp_schedule
from safefql_core.decision import DecisionSettings
from safefql_core.learners import CAPABILITIES

# The deployed decision's public API: what the node, replay, evaluate and the tests use.
__all__ = [
    "Decision", "MAX_TIMEOUT_PERIODS", "Mode", "Runtime", "RuntimeConfig", "TorchGraphs", "combined_age",
    "load_runtime",
]


class Mode(str, Enum):
    NOMINAL = "NOMINAL"      # the actor's action passed the calibrated check
    INTERVENE = "INTERVENE"  # the actor's action failed; a safer candidate passed
    UNSAFE = "UNSAFE"        # no candidate passed; the safest one is sent anyway
    REJECTED = "REJECTED"    # the state (or the networks' output on it) cannot be trusted; the stop action is sent


class Decision(NamedTuple):
    """One tick's outcome. A NamedTuple: built every tick, it costs a quarter of a frozen
    dataclass (~0.5 µs against ~2 µs, docs/notebook/latency.md)."""

    action: np.ndarray
    mode: Mode
    reason: str
    q_safe: float
    v_safe: float
    threshold: float
    inference_ms: float

    @property
    def margin(self) -> float:
        """δ* − Q_safe: positive means the sent action is certified with room to spare."""
        return self.threshold - self.q_safe


@dataclass
class RuntimeConfig:
    backend: str = "onnxruntime"        # or "torch"
    threads: int = 1
    state_timeout: float | None = None  # seconds; None: the caller does not track age
    # How far in the future a state's stamp may lie (clock skew between the sender's clock and
    # the node's; NTP keeps machines within a few ms). Beyond it the stamp is wrong and the
    # state rejected: a future stamp would otherwise read as fresh for as long as it is ahead.
    future_tolerance: float = 0.005
    # The decision's settings (stop action, fallbacks, candidates, proposals, noise): None means
    # the bundle's (Bundle.decision), the one its δ* was calibrated on. Another one is refused
    # unless override_decision is set, and then reported in Runtime.warnings: δ* certifies the
    # bundle's decision, not this one (docs/DESIGN.md, "One decision").
    decision: DecisionSettings | None = None
    override_decision: bool = False
    seed: int = 0
    threshold: float | None = None      # override δ*; default: the bundle's calibration
    period: float | None = None         # seconds between the caller's decisions; default: the bundle's
    # A state outside the bundle's observation_range (the trained range, widened): 'reject'
    # sends the stop action; 'warn' decides anyway and says so in the reason.
    out_of_range: str = "reject"


# state_timeout and future_tolerance may not exceed this many decision periods: a longer
# timeout would let the robot act on a state from the past for that long (docs/DESIGN.md,
# "Failure behaviour").
MAX_TIMEOUT_PERIODS = 10


class BoundCall(Protocol):
    """A graph call with fixed input shapes: write into `inputs`, then `run()`. The returned
    arrays may be reused by the next call: copy what you keep."""

    inputs: dict[str, np.ndarray]

    def run(self) -> list[np.ndarray]: ...


class Graphs(Protocol):
    def run(self, name: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...

    def bind(self, name: str, shapes: dict[str, tuple[int, ...]]) -> BoundCall: ...


class UnboundCall:
    """BoundCall over any backend's `run` (no preallocation to gain there)."""

    def __init__(self, graphs: Graphs, name: str, shapes: dict[str, tuple[int, ...]]) -> None:
        self.graphs, self.name = graphs, name
        self.inputs = {k: np.zeros(shape, np.float32) for k, shape in shapes.items()}

    def run(self) -> list[np.ndarray]:
        return self.graphs.run(self.name, self.inputs)


class OrtBoundCall:
    """An IOBinding over preallocated numpy buffers: onnxruntime reads the inputs and writes the
    outputs in place, which skips the per-call conversions and allocations of
    `InferenceSession.run` — about a quarter of a batch-1 call (docs/notebook/latency.md)."""

    def __init__(self, session, shapes: dict[str, tuple[int, ...]]) -> None:
        self.inputs = {k: np.zeros(shape, np.float32) for k, shape in shapes.items()}
        self.session, self.binding = session, session.io_binding()
        for name, buf in self.inputs.items():
            self.binding.bind_cpu_input(name, buf)
        self.outputs = [np.zeros(out.shape, np.float32) for out in session.run(None, self.inputs)]
        for meta, buf in zip(session.get_outputs(), self.outputs):
            self.binding.bind_output(meta.name, "cpu", 0, np.float32, list(buf.shape), buf.ctypes.data)
        # The C++ call behind InferenceSession.run_with_iobinding: the public wrapper adds
        # WebGPU graph-capture bookkeeping, ~1.3 µs a call on the CPU (docs/notebook/latency.md).
        self._run, self._binding = session._sess.run_with_iobinding, self.binding._iobinding

    def run(self) -> list[np.ndarray]:
        self._run(self._binding, None)
        return self.outputs


class OrtGraphs:
    def __init__(self, bundle: Bundle, threads: int) -> None:
        self.sessions = {name: ort_session(str(bundle.file(name)), threads) for name in bundle.meta["graphs"]}

    def run(self, name: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.sessions[name].run(None, feeds)

    def bind(self, name: str, shapes: dict[str, tuple[int, ...]]) -> BoundCall:
        session = self.sessions[name]
        if any(p.endswith("CUDAExecutionProvider") for p in session.get_providers()):
            return UnboundCall(self, name, shapes)  # buffers would live on the host: no gain
        return OrtBoundCall(session, shapes)


class TorchGraphs:
    """The same graphs in torch eager, rebuilt from bundle.json and weights.pt."""

    def __init__(self, bundle: Bundle, threads: int) -> None:
        import torch

        from safefql_core.bundle_export import graph_modules
        from safefql_core.training import build_learner
        torch.set_num_threads(threads)
        m = bundle.meta
        learner = build_learner(m["algo"], m["training"]["config"], m["obs_dim"], m["act_dim"],
                                np.array(m["observation_normalisation"]["mean"]),
                                np.array(m["observation_normalisation"]["std"]))
        learner.load_state_dict(torch.load(bundle.path / "weights.pt", weights_only=True))
        self.torch = torch
        self.learner = learner.eval()
        self.modules = graph_modules(self.learner, m["algo"])

    def run(self, name: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self.torch.no_grad():
            out = self.modules[name](*(self.torch.from_numpy(v) for v in feeds.values()))
        return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]

    def bind(self, name: str, shapes: dict[str, tuple[int, ...]]) -> BoundCall:
        return UnboundCall(self, name, shapes)


class Runtime:
    def __init__(self, bundle: Bundle, cfg: RuntimeConfig | None = None) -> None:
        self.bundle, self.cfg = bundle, cfg or RuntimeConfig()
        self.decision, self.warnings = decision_for(bundle, self.cfg)
        self._check_config(bundle)
        self._proposed = "every actor proposal" if self.decision.proposals > 1 else "actor action"  # for reasons
        self.graphs: Graphs = (OrtGraphs if self.cfg.backend == "onnxruntime" else TorchGraphs)(
            bundle, self.cfg.threads)
        self.obs_dim, self.act_dim = bundle.obs_dim, bundle.act_dim
        box = bundle.meta["observation_range"]
        self._bounds = list(zip(box["low"], box["high"]))
        self._warn_out_of_range = self.cfg.out_of_range == "warn"
        self.threshold = bundle.threshold if self.cfg.threshold is None else bundle.check_threshold(
            self.cfg.threshold, "RuntimeConfig.threshold", "pass a value in that range, or None for the bundle's δ*")
        self.stop_action = np.array(self.decision.stop_action, np.float32)
        self.fallbacks = np.array(self.decision.fallback_actions, np.float32).reshape(-1, self.act_dim)
        self.candidates = self.decision.candidates
        self.rng = np.random.default_rng(self.cfg.seed)
        self._fisor = CAPABILITIES[bundle.algo].proposer == "denoiser"   # FISOR-style: the DDPM chain proposes
        self._sample_noise = self.decision.noise == "sample"  # per tick
        # Every call on the decision path is bound once to fixed-size buffers (BoundCall).
        if len(self.fallbacks):
            self._fallback_scores = self._bind_safety(len(self.fallbacks))
            self._fallback_scores.inputs["action"][:] = self.fallbacks
        if self._fisor:
            self._fisor_setup()
        else:  # nominal: one batch-1 call of the fused policy graph (or the proposals graph for
            # N > 1); candidates: one batched call
            n = self.decision.proposals
            if n > 1:
                self._proposals = self.graphs.bind("proposals", {"observation": (n, self.obs_dim),
                                                                 "noise": (n, self.act_dim)})
            else:
                self._policy = self._bind_policy(1)
            self._candidates = self._bind_policy(self.candidates) if self.candidates else None

    def _check_config(self, bundle: Bundle) -> None:
        """Refuse a configuration that would weaken the decision, naming the value and its range."""
        cfg = self.cfg
        if cfg.backend not in ("onnxruntime", "torch"):
            raise ValueError(f"backend must be 'onnxruntime' or 'torch', got '{cfg.backend}'")
        if cfg.out_of_range not in ("reject", "warn"):
            raise ValueError(f"out_of_range must be 'reject' or 'warn', got {cfg.out_of_range!r}")
        for name, low in (("threads", 1), ("seed", 0)):
            value = getattr(cfg, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        period = bundle.decision_period if cfg.period is None else cfg.period
        if period is not None and not (_real(period) and 0 < period < math.inf):
            raise ValueError(f"period must be a positive number of seconds, got {period!r}")
        self.timeout_limit = math.inf if period is None else MAX_TIMEOUT_PERIODS * period
        if cfg.state_timeout is not None:
            self._check_time("state_timeout", cfg.state_timeout, positive=True)
        self._check_time("future_tolerance", cfg.future_tolerance, positive=False)
        self._check_proposals(bundle)

    def _check_time(self, name: str, value: float, positive: bool) -> None:
        """A time limit must be finite, > 0 (or >= 0) and at most MAX_TIMEOUT_PERIODS periods."""
        if not (_real(value) and math.isfinite(value) and (value > 0 if positive else value >= 0)
                and value <= self.timeout_limit):
            raise ValueError(f"{name} must be a number of seconds {'>' if positive else '>='} 0 and at most "
                             f"{MAX_TIMEOUT_PERIODS} decision periods ({self.timeout_limit:g} s), got {value!r}")

    def set_state_timeout(self, value: float) -> float | None:
        """Change state_timeout while running, within the bounds of construction (ValueError
        otherwise); returns the old value. The node logs and reports every change."""
        self._check_time("state_timeout", value, positive=True)
        old, self.cfg.state_timeout = self.cfg.state_timeout, float(value)
        return old

    def _check_proposals(self, bundle: Bundle) -> None:
        n = self.decision.proposals
        if n > 1 and not CAPABILITIES[bundle.algo].proposals:
            raise ValueError(f"proposals > 1 needs a safefql bundle (a reward critic to rank them); "
                             f"this one is '{bundle.algo}', which samples its own candidates")

    def _bind_policy(self, n: int) -> BoundCall:
        return self.graphs.bind("policy", {"observation": (n, self.obs_dim), "noise": (n, self.act_dim)})

    def _bind_safety(self, n: int) -> BoundCall:
        return self.graphs.bind("safety", {"observation": (n, self.obs_dim), "action": (n, self.act_dim)})

    # ---- validation --------------------------------------------------------------------------
    def validate(self, obs: np.ndarray | None, age: float | None,
                 received_age: float | None = None) -> tuple[np.ndarray | None, str]:
        """(observation as float32 [1, obs_dim], "" or a warning) or (None, why it is rejected).

        `age` is now − the state's stamp (its sender's clock), `received_age` the time since
        the node received it (a monotonic clock). Both must be within state_timeout: the stamp
        alone would let a state stamped in the future, or a clock that jumps, freeze a state as
        fresh; the receipt alone would trust a message that was already old when it came.
        """
        if obs is None:
            return None, "no state received yet"
        why = self._age_problem(age, "stamp") or self._age_problem(received_age, "receipt")
        if why:
            return None, why
        try:
            o = np.asarray(obs)
        except (TypeError, ValueError) as exc:  # ragged nesting
            return None, f"state is not an array of numbers ({exc})"
        if o.dtype.kind not in "iuf":
            return None, f"state is not real numbers (dtype {o.dtype})"
        o = o.astype(np.float32).reshape(1, -1)
        if o.shape[1] != self.obs_dim:
            return None, f"state has {o.shape[1]} values, the policy expects {self.obs_dim}"
        # Python over a list: ~4x cheaper than numpy's reductions for a few values, and this
        # runs every tick; the indices are computed on the (rare) failure path only.
        values = o[0].tolist()
        if not all(map(math.isfinite, values)):
            return None, f"state has non-finite values at indices {np.flatnonzero(~np.isfinite(o[0])).tolist()}"
        if not all(lo <= x <= hi for x, (lo, hi) in zip(values, self._bounds)):
            outside = [i for i, (x, (lo, hi)) in enumerate(zip(values, self._bounds)) if not lo <= x <= hi]
            why = (f"state is outside the trained observation range at indices {outside} "
                   f"(values {[values[i] for i in outside]}, range {[list(self._bounds[i]) for i in outside]})")
            return (o, f"warning: {why}") if self._warn_out_of_range else (None, why)
        return o, ""

    def _age_problem(self, age: float | None, clock: str) -> str:
        """Why an age (by the state's `clock`: its stamp or its receipt) makes it untrusted; ""
        when it does not. None means the caller does not track that age."""
        if age is None:
            return ""
        if not _real(age):
            return f"state age by its {clock} is {age!r}, not a number of seconds"
        age = float(age)
        if not math.isfinite(age):
            return f"state age by its {clock} is {age}: the clock or the stamp is broken"
        if age < -self.cfg.future_tolerance:
            return (f"state {clock} lies {-age * 1e3:.1f} ms in the future (tolerance "
                    f"{self.cfg.future_tolerance * 1e3:.1f} ms): the sender's clock is ahead of the node's")
        timeout = self.cfg.state_timeout
        if timeout is not None and age > timeout:
            old = "old" if clock == "stamp" else "since receipt"
            return f"state is stale: {age * 1e3:.1f} ms {old} > state_timeout {timeout * 1e3:.1f} ms"
        return ""

    # ---- the decision ------------------------------------------------------------------------
    def decide(self, obs: np.ndarray | None, age: float | None = None,
               received_age: float | None = None) -> Decision:
        """The tick's decision; `age` and `received_age` as in `validate`."""
        start = time.perf_counter()
        o, why = self.validate(obs, age, received_age)
        if o is None:
            return self._stop(why, start)
        action, q, v = self.propose(o)
        if q < self.threshold:
            mode, reason = Mode.NOMINAL, ""
        else:
            action, q, v = self.safest_candidate(o, action, q, v)
            if q < self.threshold:
                mode, reason = Mode.INTERVENE, f"{self._proposed} had Q_safe above δ*={self.threshold:.3f}"
            else:
                mode, reason = Mode.UNSAFE, f"no candidate has Q_safe below δ*={self.threshold:.3f}; sent the safest"
        if why:  # a warning (out_of_range 'warn')
            reason = f"{reason}; {why}" if reason else why
        # A NaN fails every comparison above without raising: without this check a NaN action
        # (weights gone NaN, or an input that overflows the first layer) would be sent.
        if not (math.isfinite(q) and math.isfinite(v) and all(map(math.isfinite, action.tolist()))):
            return self._stop(f"the networks' output is non-finite (action {action.tolist()}, Q_safe {q}, "
                              f"V_safe {v}); sent the stop action", start, q, v)
        return Decision(action, mode, reason, q, v, self.threshold, (time.perf_counter() - start) * 1e3)

    def _stop(self, why: str, start: float, q: float = math.nan, v: float = math.nan) -> Decision:
        return Decision(self.stop_action.copy(), Mode.REJECTED, why, q, v, self.threshold,
                        (time.perf_counter() - start) * 1e3)

    def score(self, o: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Q_safe, V_safe) of any number of actions at one validated state, in one call (for
        replay and tests; the decision path uses its bound calls)."""
        actions = np.asarray(actions, dtype=np.float32).reshape(-1, self.act_dim)
        q, v = self.graphs.run("safety", {"observation": np.repeat(o, len(actions), axis=0), "action": actions})
        return q, v

    @staticmethod
    def _run_at(call: BoundCall, o: np.ndarray) -> list[np.ndarray]:
        """Run a bound call with every row's observation set to `o`; copies of the outputs."""
        call.inputs["observation"][:] = o
        return [out.copy() for out in call.run()]

    def propose(self, o: np.ndarray) -> tuple[np.ndarray, float, float]:
        """The policy's own action and its safety value."""
        if self._fisor:
            return self._fisor_propose(o)
        if self.decision.proposals > 1:
            return self._best_proposal(o)
        inputs = self._policy.inputs
        inputs["observation"][:] = o
        if self._sample_noise:
            inputs["noise"][:] = self.rng.standard_normal((1, self.act_dim))
        action, q, v = self._policy.run()
        return action[0].copy(), q.item(), v.item()

    def _best_proposal(self, o: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Of N actor noises (the first one zero unless noise is 'sample'), the action with the
        highest conservative Q_reward among those with Q_safe < δ*; the safest when none passes
        (decide then widens the search). The actor is trained on sampled noises, so each is
        one of its actions; the reward critic picks among them, the safety critic vetoes."""
        inputs, n = self._proposals.inputs, self.decision.proposals
        inputs["observation"][:] = o
        inputs["noise"][:] = self.rng.standard_normal((n, self.act_dim))
        if not self._sample_noise:
            inputs["noise"][0] = 0.0
        action, q_reward, q_safe, v_safe = self._proposals.run()
        certified = q_safe < self.threshold
        best = int(np.argmax(np.where(certified, q_reward, -np.inf))) if certified.any() else int(np.argmin(q_safe))
        return action[best].copy(), float(q_safe[best]), float(v_safe[best])

    def safest_candidate(self, o: np.ndarray, proposed: np.ndarray, q_proposed: float,
                         v_proposed: float) -> tuple[np.ndarray, float, float]:
        """The lowest-Q_safe action among the proposal, the fallbacks and extra policy samples."""
        pool: list[tuple[np.ndarray, ...]] = [(proposed[None], np.array([q_proposed]), np.array([v_proposed]))]
        if len(self.fallbacks):
            pool.append((self.fallbacks, *self._run_at(self._fallback_scores, o)))
        if self.candidates:
            pool.append(self._policy_samples(o))
        return _safest(*(np.concatenate(part) for part in zip(*pool)))

    def _policy_samples(self, o: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(actions, Q_safe, V_safe) for a batch of the policy's own samples at one state."""
        if self._fisor:
            self._fisor_scores.inputs["action"][:] = self._fisor_samples(o)
            q, v = self._run_at(self._fisor_scores, o)
            return self._fisor_scores.inputs["action"].copy(), q, v
        assert self._candidates is not None, "bound whenever candidates > 0, the only caller's condition"
        self._candidates.inputs["noise"][:] = self.rng.standard_normal((self.candidates, self.act_dim))
        action, q, v = self._run_at(self._candidates, o)
        return action, q, v

    # ---- FISOR-style policy: DDPM chain over N candidates, keep argmin Q_safe ------------------
    def _fisor_setup(self) -> None:
        cfg = self.bundle.meta["training"]["config"]
        self.fisor_steps, self.fisor_n = cfg["diffusion_steps"], cfg["candidates"]
        self.betas = vp_schedule(self.fisor_steps).astype(np.float32)
        self.alpha_bars = np.cumprod(1 - self.betas).astype(np.float32)
        n = self.fisor_n
        self._denoiser = self.graphs.bind("denoiser", {"observation": (n, self.obs_dim), "x": (n, self.act_dim),
                                                        "t": (n, 1)})
        self._fisor_scores = self._bind_safety(n)

    def _fisor_samples(self, o: np.ndarray) -> np.ndarray:
        """The N candidates of one state: ddpm's chain over the exported denoiser, its noise
        drawn from the runtime's generator as the chain goes."""
        n, inputs = self.fisor_n, self._denoiser.inputs
        inputs["observation"][:] = o

        def denoise(x: np.ndarray, t: float) -> np.ndarray:
            inputs["x"][:], inputs["t"][:] = x, t
            return self._denoiser.run()[0]

        def noise(_: int) -> np.ndarray:
            return self.rng.standard_normal((n, self.act_dim)).astype(np.float32)

        return reverse_chain(denoise, noise, self.betas, self.alpha_bars, np.sqrt)

    def _fisor_propose(self, o: np.ndarray) -> tuple[np.ndarray, float, float]:
        return _safest(*self._policy_samples(o))


def decision_for(bundle: Bundle, cfg: RuntimeConfig) -> tuple[DecisionSettings, list[str]]:
    """The decision a runtime runs and what to warn about it. The bundle's unless `cfg.decision`
    differs from it, which needs `cfg.override_decision` (ValueError otherwise, naming what
    differs); warnings when the decision run is not the one δ* certifies."""
    own = bundle.decision
    decision = own if cfg.decision is None else cfg.decision
    changed = own.differences(decision)
    if changed and not cfg.override_decision:
        raise ValueError(f"{bundle.path}: the decision given differs from the bundle's in {changed} (bundle: "
                         f"{own.describe()}; given: {decision.describe()}). The bundle's δ* certifies its own "
                         "decision: recalibrate with these settings (offline_train.calibrate --proposals/"
                         "--candidates/--noise) and re-export, or set override_decision to run them anyway")
    warnings = [f"decision overridden ({', '.join(changed)}): {decision.describe()}"] if changed else []
    if bundle.meta.get("calibration") is not None and cfg.threshold is None:
        certified = bundle.certified_decision
        if certified is None:
            warnings.append(f"δ*={bundle.threshold:.4g} certifies {LEGACY_CERTIFIES}, not the decision run; "
                            "recalibrate (offline_train.calibrate) and re-export")
        elif certified.differences(decision):
            warnings.append(f"δ*={bundle.threshold:.4g} was calibrated on another decision ({certified.describe()}) "
                            f"than the one run, which differs in {certified.differences(decision)}: its "
                            "certificate does not cover it")
    return decision, warnings


def combined_age(ages: list[float], allowances: list[float], future_tolerance: float) -> float:
    """One age for a state assembled from several inputs, each allowed `allowance` seconds more
    than `state_timeout` (its own max age in the spec minus the spec's), that `decide` judges as
    it would judge each input on its own: an input stamped in the future beyond the tolerance
    (or a non-finite age) makes the whole state untrusted; otherwise the input stalest relative
    to its own limit decides. A fresh input with a positive allowance never reads as being from
    the future: the result is then at least 0."""
    if not all(map(math.isfinite, ages)) or min(ages) < -future_tolerance:
        return min(ages, key=lambda a: a if math.isfinite(a) else -math.inf)
    return max(0.0, max(age - allowance for age, allowance in zip(ages, allowances)))


def _real(value) -> bool:
    """A real number (not a bool, a string or a complex)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _safest(actions: np.ndarray, q: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The candidate with the lowest pessimistic Q_safe (first one on ties)."""
    best = int(np.argmin(q))
    return actions[best], float(q[best]), float(v[best])


def load_runtime(path: str, cfg: RuntimeConfig | None = None) -> Runtime:
    """Load, verify and wrap a bundle in one call (what the node and replay use)."""
    try:
        return Runtime(load_bundle(path), cfg)
    except KeyError as exc:
        raise BundleError(f"{path}: bundle.json lacks {exc}; re-export the bundle") from exc

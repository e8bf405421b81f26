"""Calibrate δ* on the decision that is deployed (docs/DESIGN.md, "One decision").

The runtime sends its decision's action, not the raw z = 0 actor's: with N proposals the
best certified of N actor noises, on an intervention a fallback or an extra sample. So the
outcome y that δ* must bound is the one of that decision, rolled out in the simulator
through `Runtime.decide` itself (onnxruntime, the bundle's graphs), and V̂ is the Q_safe of
the action it sends at the start state, the value it gates on.

Each robot's simulator supplies the closed loop (`ClosedLoop`): the boat's, the diff-drive
robot's (safefql_core.pipeline.calibrate says which a run gets).

The decision depends on δ*: a proposal passes or not, the runtime intervenes or not. δ* is
therefore a fixed point: roll out the decision at a threshold δ_k, fit δ_{k+1} to those
outcomes, repeat until δ_{k+1} = δ_k (the beta method's grid is finite, so equality is
exact) or MAX_ROUNDS have passed; the rounds and whether they converged are recorded. The
first round rolls out at δ = 0, the paper's gate. A check set rolled out at the final δ
measures its coverage, as before.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from safefql_core import evaluation
from safefql_core.bundle import Bundle
from safefql_core.decision import DecisionSettings
from safefql_core.runtime import Runtime, RuntimeConfig

MAX_ROUNDS = 3
Fit = Callable[[np.ndarray, np.ndarray], dict]  # (y, V̂) -> {"delta": δ, ...}
# (policy, start states, ticks) -> each episode's max margin: a robot's simulator in closed loop
ClosedLoop = Callable[[evaluation.Policy, np.ndarray, int], np.ndarray]


def deployed_outcomes(bundle: Bundle, decision: DecisionSettings, threshold: float, states: np.ndarray,
                      steps: int, seed: int, closed_loop: ClosedLoop) -> tuple[np.ndarray, np.ndarray]:
    """(y, V̂) of the deployed decision with threshold δ = `threshold` from each start state:
    the realised max margin over `steps` ticks of `closed_loop`, and Q_safe of the action it
    sends first."""
    runtime = Runtime(bundle, RuntimeConfig(decision=decision, override_decision=True, threshold=threshold,
                                            seed=seed))
    q_safe: list[np.ndarray] = []
    policy, _ = evaluation.runtime_policy(runtime, q_safe)
    return closed_loop(policy, states, steps), q_safe[0]


def calibrate_decision(bundle: Bundle, decision: DecisionSettings, fit: Fit, states: np.ndarray,
                       steps: int, seed: int, closed_loop: ClosedLoop, log: Callable[[str], None] = lambda _: None
                       ) -> dict:
    """δ* for `decision` by fixed-point iteration over at most MAX_ROUNDS rollouts of `states`.

    Returns the last fit (its "delta" is δ*), its (y, V̂), and `rounds` (the threshold each
    round rolled out at and the δ fitted to it) and `converged`. Without convergence δ* is the
    last fitted one, measured on rollouts at the previous round's threshold: the caller says so.
    `log` hears each round as it ends (a round in a slow simulator takes minutes).
    """
    threshold, rounds = 0.0, []
    for k in range(MAX_ROUNDS):
        start = time.perf_counter()
        y, v_hat = deployed_outcomes(bundle, decision, threshold, states, steps, seed, closed_loop)
        result = fit(y, v_hat)
        rounds.append({"rolled_out_at": threshold, "delta": result["delta"]})
        log(f"calibration round {k + 1} (at most {MAX_ROUNDS}): {len(states)} episodes of {steps} ticks at "
            f"δ = {threshold:.4f}, {int((y > 0).sum())} violated; fitted δ = {result['delta']:.4f} "
            f"({time.perf_counter() - start:.0f} s)")
        if result["delta"] == threshold:
            break
        threshold = result["delta"]
    return {"fit": result, "y": y, "v_hat": v_hat, "rounds": rounds,
            "converged": rounds[-1]["delta"] == rounds[-1]["rolled_out_at"]}

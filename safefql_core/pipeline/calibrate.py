"""Conformal calibration of the run-time threshold δ* for a run (the `calibrate` step; its
command is offline_train.calibrate, and `fit --bag` calibrates through it too).

In the robot's simulator (the boat's, the diff-drive robot's: `simulator_of`) δ* is calibrated on
the decision that is deployed (`Runtime.decide` with the
task's default decision, changed by `decision_changes`: proposals, candidates, noise, stop
action, fallbacks),
iterated to a fixed point (safefql_core.decision_calibration); calibration.json records that
decision, and `export` writes it into the bundle as the one to deploy.
"""
from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from safefql_core import calibration as cal
from safefql_core.bundle import BundleError, load_bundle
from safefql_core.data import load_dataset
from safefql_core.decision import DecisionError, DecisionSettings
from safefql_core.decision_calibration import ClosedLoop, calibrate_decision, deployed_outcomes
from safefql_core.envs import boat, diffdrive
from safefql_core.evaluation import max_margins
from safefql_core.learners import CAPABILITIES, SafetyLearner
from safefql_core.pipeline import Log, diffdrive_evaluate, quiet
from safefql_core.pipeline.export import export_run
from safefql_core.pipeline.files import CALIBRATION_FILE, CALIBRATION_PLOT, prepare_output_file
from safefql_core.tasks import TaskSpec, TaskSpecError, simulator_mismatch
from safefql_core.training import RunError, load_run


def logged_outcomes(learner: SafetyLearner, data_path: str, rng: np.random.Generator, n: int,
                    horizon: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(y, V̂) from logged episodes: outcome of the *behaviour* policy from a random tick,
    the max margin over the next `horizon` ticks (default: the rest of the episode).

    The weaker statement: it calibrates Q_safe(s, a_logged) against what the logged
    behaviour then did, not what this policy would do, and the episodes were also seen in
    training.
    """
    data = load_dataset(data_path)
    margins = data.margin_signal()
    starts = data.episode_starts()
    ends = np.append(starts[1:], len(data))
    picks = rng.integers(0, len(starts), n)
    idx = np.array([rng.integers(starts[e], ends[e]) for e in picks])
    y = cal.logged_outcome(margins, idx, ends[picks], horizon)
    obs = torch.as_tensor(data.observations[idx])
    v_hat = learner.safety(obs, torch.as_tensor(data.actions[idx]))[0].numpy()
    return y, v_hat


SOURCES = ("auto", "sim", "data")
LOGGED = "logged episodes (behaviour policy outcomes; weaker statement)"
SIMULATED = "simulated rollouts of the deployed decision"


DEFAULT_N = 2000   # held-out states per set on logged data, and in a simulator that rolls them out in minutes


@dataclass(frozen=True)
class Simulator:
    """A robot's simulator as calibration uses it: safe start states, the closed loop of a
    policy from them, the episode length, and how many start states a set has by default
    (`default_n`: a slow simulator, pure-Python lidar ray casting, rolls out fewer)."""
    starts: Callable[[np.random.Generator, int], np.ndarray]
    closed_loop: ClosedLoop
    steps: int
    default_n: int = DEFAULT_N


def simulator_of(meta: dict) -> Simulator | str:
    """The simulator a run is calibrated in, or why it has none. Never another task's: the boat's
    simulator only for the boat's own spec (tasks.simulator_mismatch), the diff-drive robot's for
    a spec that reads its messages and commands it within its limits."""
    spec = (meta.get("dataset_attrs") or {}).get("task_spec")
    if meta["task"] == diffdrive_evaluate.TASK:
        if not spec:
            return "a diff-drive run records no task spec, so nothing says how its robot's messages become its state"
        try:
            loop = diffdrive_evaluate.closed_loop(TaskSpec.from_dict(spec, meta["task"]))
        except (RunError, TaskSpecError) as exc:
            return f"the diff-drive simulator cannot run this spec: {exc}"
        # ~0.4 s per 300-tick episode on one core (IR-SIM's lidar): 500 starts take ~3 min a round
        return Simulator(diffdrive.sample_starts, loop, diffdrive.EPISODE_STEPS, default_n=500)
    why = simulator_mismatch(meta["task"], spec)
    if why is None and meta["task"] != "boat":
        why = (f"task '{meta['task']}' has no simulator for calibration here "
               f"(only the boat's and the {diffdrive_evaluate.TASK} robot's)")
    return why or Simulator(boat.sample_safe_states, max_margins, boat.EPISODE_STEPS)


def check_settings(epsilon: float, n: int, beta: float, horizon: int | None) -> None:
    """Refuse settings outside their range before minutes of rollouts are spent on them."""
    if not 0.0 < epsilon < 1.0:
        raise RunError(f"--epsilon is the allowed violation probability, in (0, 1), e.g. 0.05; got {epsilon:g}")
    if not 0.0 < beta < 1.0:
        raise RunError(f"--beta is 1 - the confidence, in (0, 1), e.g. 0.05; got {beta:g}")
    if n < 1:
        raise RunError(f"--n must be at least 1 held-out state, got {n}")
    if horizon is not None and horizon < 1:
        raise RunError(f"--horizon must be at least 1 tick, got {horizon}")


def replacing_note(run: str) -> str | None:
    """What a new calibration of `run` replaces, if it had one: said before it is overwritten."""
    file = Path(run) / CALIBRATION_FILE
    if not file.is_file():
        return None
    old = json.loads(file.read_text())
    return (f"note: replacing the previous calibration in {file} (δ* = {old.get('delta', float('nan')):.4f}, "
            f"{old.get('method', 'method not recorded')}, ε={old.get('epsilon')}, n={old.get('n')}); "
            "bundles exported before keep their δ*")


def calibrate_run(run: str, epsilon: float = 0.05, n: int | None = None, method: str = "beta",
                  beta: float = 0.05, source: str = "auto", seed: int = 0, plot: str | None = None,
                  horizon: int | None = None, allow_partial: bool = False, log: Log = quiet,
                  decision_changes: dict | None = None) -> dict:
    """Calibrate δ* for a run, store it in <run>/calibration.json (export picks it up); says
    through `log` what it replaces and the files it writes.

    `n` held-out states per set (None: the simulator's default, DEFAULT_N on logged data).
    `source` auto: rollouts of the deployed decision in the simulator where the run's robot
    has one, logged episodes otherwise (the weaker statement, said in the result). Never
    another task's simulator: `sim` for a task without one is refused with the reason.
    `decision_changes` (proposals, candidates, noise, stop_action, fallback_actions; None keeps
    one) change the task's default decision; the result records the decision δ* certifies."""
    check_settings(epsilon, DEFAULT_N if n is None else n, beta, horizon)
    plot_path = prepare_output_file(plot or Path(run) / CALIBRATION_PLOT, "--plot")
    learner, meta = load_run(run, allow_partial=allow_partial)
    if not CAPABILITIES[meta["algo"]].safety_critic:
        raise RunError(f"a {meta['algo']} run has no safety critic to calibrate")
    if source not in SOURCES:
        raise RunError(f"--source must be one of {SOURCES}, got {source!r}")
    try:
        decision = DecisionSettings.for_task(meta["task"], meta["act_dim"]).with_changes(**(decision_changes or {}))
    except DecisionError as exc:
        raise RunError(f"the decision to calibrate: {exc}") from None
    found = simulator_of(meta)
    no_simulator = found if isinstance(found, str) else None
    if source == "sim" and no_simulator:
        raise RunError(f"--source sim: {no_simulator}; calibrate on its logged episodes with --source data "
                       "(the weaker statement)")
    source = ("data" if no_simulator else "sim") if source == "auto" else source
    simulator = found if isinstance(found, Simulator) and source == "sim" else None
    n = n if n is not None else simulator.default_n if simulator is not None else DEFAULT_N
    rng = np.random.default_rng(seed)
    if method == "split":
        fit = lambda y, v: cal.split_conformal(y, v, epsilon)  # noqa: E731
    else:
        span = cal.grid_span(meta.get("margin_range"))
        fit = lambda y, v: cal.beta_threshold(y, v, epsilon, beta, span=span)  # noqa: E731
    fixed_point = None
    if simulator is not None:
        log(f"calibrating δ* for {decision.describe()} in the {meta['task']} simulator: {n} start states per set, "
            "a round per fixed-point step and one to check")
        fitted = simulated_calibration(run, simulator, decision, fit, rng, n, horizon or simulator.steps, seed,
                                       allow_partial, log)
        result, (y, v), (y2, v2) = fitted["fit"], (fitted["y"], fitted["v_hat"]), fitted["check"]
        fixed_point = {"rounds": fitted["rounds"], "converged": fitted["converged"]}
    else:
        y, v = logged_outcomes(learner, meta["data"], rng, n, horizon)
        y2, v2 = logged_outcomes(learner, meta["data"], rng, n, horizon)
        result = fit(y, v)
    result = {
        "delta": result["delta"], "epsilon": epsilon, "n": n, "method": method,
        "source": SIMULATED if source == "sim" else LOGGED,
        "no_simulator": no_simulator,
        "q_hat": result.get("q_hat"), "seed": seed, "horizon": horizon, "fell_back": result.get("fell_back", False),
        "decision": decision.to_dict(), "fixed_point": fixed_point,
        **cal.coverage(y2, v2, result["delta"], beta),
    }
    note = replacing_note(run)
    if note:
        log(note)
    (Path(run) / CALIBRATION_FILE).write_text(json.dumps(result, indent=2))
    cal.score_histogram(str(plot_path), y - v, -result["delta"] if result["q_hat"] is None else result["q_hat"],
                        f"{method} conformal, ε={epsilon}, n={n}")
    log(f"wrote {Path(run) / CALIBRATION_FILE} and {plot_path}")
    return result


def simulated_calibration(run: str, simulator: Simulator, decision: DecisionSettings, fit, rng: np.random.Generator,
                          n: int, steps: int, seed: int, allow_partial: bool, log: Log = quiet) -> dict:
    """The fixed-point calibration of `decision` on one set of safe start states, and `check`,
    the (y, V̂) of a second set rolled out at the resulting δ*; both through the run's exported
    graphs (a bundle in a temporary directory: the runtime runs what a robot runs)."""
    fit_states, check_states = simulator.starts(rng, n), simulator.starts(rng, n)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            export_run(run, tmp, seed, allow_partial)
            bundle = load_bundle(tmp)
            fitted = calibrate_decision(bundle, decision, fit, fit_states, steps, seed, simulator.closed_loop, log)
            log(f"checking δ* = {fitted['fit']['delta']:.4f} on {n} other episodes")
            check = deployed_outcomes(bundle, decision, fitted["fit"]["delta"], check_states, steps, seed,
                                      simulator.closed_loop)
        except (BundleError, ValueError) as exc:  # e.g. proposals > 1 for a FISOR-style run
            raise RunError(f"cannot roll out the decision ({decision.describe()}): {exc}") from None
    return {**fitted, "check": check}


def describe(result: dict) -> str:
    """The result as printed by `calibrate` and `fit --bag`: a logged-data source and a
    fallback threshold are said in words, not only stored in the JSON."""
    horizon = "rest of episode" if result["horizon"] is None else f"{result['horizon']} ticks"
    certified = DecisionSettings.from_dict(result["decision"], len(result["decision"]["stop_action"]))
    lines = [f"δ* = {result['delta']:.4f} ({result['method']}, ε={result['epsilon']}, n={result['n']}, "
             f"outcome over {horizon}); "
             f"held-out: {result['certified']} of {result['n']} certified ({result['certified_fraction']:.1%}), "
             f"{result['violations_among_certified']} of them violated, "
             f"coverage {result['coverage']:.4f} [{result['coverage_lower_bound']:.4f}, "
             f"{result['coverage_upper_bound']:.4f}] at {result['confidence']:.0%} confidence",
             f"decision certified: {certified.describe()}"]
    fixed = result.get("fixed_point")
    if fixed:
        path = " -> ".join(f"{r['delta']:.4f}" for r in fixed["rounds"])
        lines.append(f"fixed point: δ fitted per round {path} (first rolled out at 0); " + (
            "converged" if fixed["converged"] else
            f"WARNING: not converged in {len(fixed['rounds'])} rounds: δ* was fitted to rollouts at "
            f"{fixed['rounds'][-1]['rolled_out_at']:.4f}, not at itself; the held-out coverage above is "
            "measured at δ*"))
    if result["source"] == LOGGED:
        lines.append("note: calibrated on logged episodes" + (f" ({result['no_simulator']})"
                     if result.get("no_simulator") else "")
                     + ": the weaker statement, and no conformal guarantee. Ticks of one logged episode"
                     " are correlated, not exchangeable; the result bounds what the logged behaviour did "
                     "after states the check certified, not what this policy will do, and those episodes were "
                     "also seen in training. Check the deployed decision on a held-out recording "
                     "(offline_train.replay) before trusting it on the robot")
    if result["fell_back"]:
        lines.append("WARNING: no threshold certified states at violation rate <= ε; δ* is the grid's most "
                     "conservative point, not a measured one. If episodes are much longer than the safety "
                     "critic's horizon, calibrate over that horizon (--horizon 100 for gamma_c 0.99)")
    return "\n".join(lines)

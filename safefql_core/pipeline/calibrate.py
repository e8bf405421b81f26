"""Conformal calibration of the run-time threshold δ* for a run (the `calibrate` step; its
command is offline_train.calibrate, and `fit --bag` calibrates through it too)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from safefql_core import calibration as cal
from safefql_core import evaluation
from safefql_core.data import load_dataset
from safefql_core.envs import boat
from safefql_core.learners import CAPABILITIES, SafetyLearner
from safefql_core.pipeline import Log, quiet
from safefql_core.pipeline.files import CALIBRATION_FILE, CALIBRATION_PLOT, prepare_output_file
from safefql_core.tasks import simulator_mismatch
from safefql_core.training import RunError, load_run


def simulated_outcomes(learner: SafetyLearner, states: np.ndarray,
                       horizon: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(y, V̂): realised max margin of the frozen policy from each state over `horizon` ticks
    (default: the boat's episode), and Q_safe(s, π(s))."""
    result = evaluation.rollout(evaluation.torch_policy(learner), states, steps=horizon or boat.EPISODE_STEPS)
    obs = torch.as_tensor(states, dtype=torch.float32)
    v_hat = learner.safety(obs, learner.act(obs))[0].numpy()
    return result["max_margin"], v_hat


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


def simulator_missing(meta: dict) -> str | None:
    """Why a run cannot be calibrated in a simulator (None: the boat simulator is its robot's)."""
    why = simulator_mismatch(meta["task"], (meta.get("dataset_attrs") or {}).get("task_spec"))
    if why is None and meta["task"] != "boat":
        why = f"task '{meta['task']}' has no simulator for calibration here (only the boat's)"
    return why


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


def calibrate_run(run: str, epsilon: float = 0.05, n: int = 2000, method: str = "beta",
                  beta: float = 0.05, source: str = "auto", seed: int = 0, plot: str | None = None,
                  horizon: int | None = None, allow_partial: bool = False, log: Log = quiet) -> dict:
    """Calibrate δ* for a run, store it in <run>/calibration.json (export picks it up); says
    through `log` what it replaces and the files it writes.

    `source` auto: policy rollouts in the simulator where the run's robot has one, logged
    episodes otherwise (the weaker statement, said in the result). Never another task's
    simulator: `sim` for a task without one is refused with the reason."""
    check_settings(epsilon, n, beta, horizon)
    plot_path = prepare_output_file(plot or Path(run) / CALIBRATION_PLOT, "--plot")
    learner, meta = load_run(run, allow_partial=allow_partial)
    if not CAPABILITIES[meta["algo"]].safety_critic:
        raise RunError(f"a {meta['algo']} run has no safety critic to calibrate")
    if source not in SOURCES:
        raise RunError(f"--source must be one of {SOURCES}, got {source!r}")
    no_simulator = simulator_missing(meta)
    if source == "sim" and no_simulator:
        raise RunError(f"--source sim: {no_simulator}; calibrate on its logged episodes with --source data "
                       "(the weaker statement)")
    source = ("data" if no_simulator else "sim") if source == "auto" else source
    rng = np.random.default_rng(seed)
    if source == "sim":
        y, v = simulated_outcomes(learner, boat.sample_safe_states(rng, n), horizon)
        y2, v2 = simulated_outcomes(learner, boat.sample_safe_states(rng, n), horizon)
    else:
        y, v = logged_outcomes(learner, meta["data"], rng, n, horizon)
        y2, v2 = logged_outcomes(learner, meta["data"], rng, n, horizon)
    if method == "split":
        fit = cal.split_conformal(y, v, epsilon)
    else:
        fit = cal.beta_threshold(y, v, epsilon, beta, span=cal.grid_span(meta.get("margin_range")))
    result = {
        "delta": fit["delta"], "epsilon": epsilon, "n": n, "method": method,
        "source": "simulated policy rollouts" if source == "sim" else LOGGED,
        "no_simulator": no_simulator,
        "q_hat": fit.get("q_hat"), "seed": seed, "horizon": horizon, "fell_back": fit.get("fell_back", False),
        **cal.coverage(y2, v2, fit["delta"], beta),
    }
    note = replacing_note(run)
    if note:
        log(note)
    (Path(run) / CALIBRATION_FILE).write_text(json.dumps(result, indent=2))
    cal.score_histogram(str(plot_path), y - v, fit.get("q_hat", -fit["delta"]),
                        f"{method} conformal, ε={epsilon}, n={n}")
    log(f"wrote {Path(run) / CALIBRATION_FILE} and {plot_path}")
    return result


def describe(result: dict) -> str:
    """The result as printed by `calibrate` and `fit --bag`: a logged-data source and a
    fallback threshold are said in words, not only stored in the JSON."""
    horizon = "rest of episode" if result["horizon"] is None else f"{result['horizon']} ticks"
    lines = [f"δ* = {result['delta']:.4f} ({result['method']}, ε={result['epsilon']}, n={result['n']}, "
             f"outcome over {horizon}); "
             f"held-out: {result['certified']} of {result['n']} certified ({result['certified_fraction']:.1%}), "
             f"{result['violations_among_certified']} of them violated, "
             f"coverage {result['coverage']:.4f} [{result['coverage_lower_bound']:.4f}, "
             f"{result['coverage_upper_bound']:.4f}] at {result['confidence']:.0%} confidence"]
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

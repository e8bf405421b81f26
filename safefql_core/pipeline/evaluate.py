"""Closed-loop rollouts of a trained run or a bundle (the `evaluate` step; its command is
offline_train.evaluate, and `benchmark` scores its cells through it).

On the boat (the default task) the episodes start from a fixed set of initial states, by
default the test set (`init_states`: test, validation for tuning, the old evaluation set,
or a .npy file; safefql_core.envs.boat.STATE_SETS), and doomed starts are reported apart.
On a Safety Gymnasium task (the run's training task, or `task`) they are resets with seeds
seed, seed+1, ..., scored raw and DSRL-normalised (normalized_reward, normalized_cost at
kappa = 10, 20, 40, 80; safefql_core.envs.dsrl). The diff-drive robot is evaluated in its
own simulator (safefql_core.pipeline.diffdrive_evaluate).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from safefql_core import evaluation, gym_evaluation
from safefql_core.bundle import load_bundle
from safefql_core.envs import boat
from safefql_core.envs.boat_reference import feasible_mask
from safefql_core.pipeline import diffdrive_evaluate
from safefql_core.pipeline.export import task_description
from safefql_core.runtime import Runtime, RuntimeConfig
from safefql_core.tasks import TaskSpec, simulator_mismatch
from safefql_core.training import RunError, load_run

GYM_EPISODES = 10  # DSRL/OSRL evaluate over 10 episodes per seed


@dataclass(frozen=True)
class EvaluateOptions:
    """What is evaluated, and how: `evaluate`'s flags (one of `run` and `bundle`)."""

    run: str | None = None          # the raw actor of a run directory
    bundle: str | None = None       # the deployed decision of a bundle
    task: str | None = None         # default: the task it was trained on
    episodes: int | None = None     # boat / diff-drive: the first N starts (default all); gym: resets
    init_states: str | None = None  # boat / diff-drive: a named start set or a .npy file
    steps: int | None = None        # episode length (default: the task's)
    # The actor noise (zero or sample; a run's default: zero). For a bundle these three change its
    # decision (None: the bundle's), which needs override_decision (docs/DESIGN.md, "One decision").
    noise: str | None = None
    proposals: int | None = None    # bundle only: actor noises per tick
    candidates: int | None = None   # bundle only: extra actor samples scored on intervention
    override_decision: bool = False
    threshold: float | None = None  # bundle only: this δ* instead of the calibrated one
    out_of_range: str = "reject"    # bundle only: reject or warn
    seed: int = 0
    threads: int = 1                # the runtime's threads (a bundle)
    allow_partial: bool = False
    trajectories: bool = False      # boat / diff-drive: keep the trajectories, for a map


@dataclass
class Evaluation:
    """The summary (what `--json` holds); on the boat and the diff-drive robot also the rollout
    (and on the boat the feasible mask of its starts), from which a map of the trajectories is drawn."""

    summary: dict[str, Any]
    rollout: dict[str, Any] | None = None
    feasible: np.ndarray | None = None


def load_initial_states(choice: str, episodes: int | None) -> np.ndarray:
    """The first `episodes` states (all by default) of `--init-states`."""
    states = boat.load_initial_states(choice)
    if episodes is not None and episodes > len(states):
        raise RunError(f"--episodes {episodes} exceeds the {len(states)} states of --init-states {choice}; "
                       "pass a larger set")
    return states[:episodes]


def bundle_task(bundle: str, task: str | None) -> str:
    """The task a bundle was trained on (it records it); --task may only repeat it."""
    recorded = load_bundle(bundle, check=False).meta["task"]["name"]
    if task is not None and task != recorded:
        raise RunError(f"--task {task} contradicts the bundle, trained on task '{recorded}'; leave --task out")
    return recorded


def evaluate(opts: EvaluateOptions) -> Evaluation:
    """Roll out the run's actor or the bundle's deployed decision on its task; refuses
    settings that do not apply (with the flag's name) before any episode."""
    torch.manual_seed(opts.seed)  # FISOR's candidate sampling draws from the global generator
    runtime = None   # only for a bundle's deployed decision
    if opts.run:
        if any(v is not None for v in (opts.proposals, opts.candidates, opts.threshold)) or \
                opts.out_of_range != "reject" or opts.override_decision:
            raise RunError("--proposals, --candidates, --threshold, --out-of-range and --override-decision are "
                           "settings of the deployed decision: evaluate a --bundle (python -m offline_train.export "
                           "--run RUN --out RUN/bundle)")
        learner, meta = load_run(opts.run, allow_partial=opts.allow_partial)
        task = opts.task or meta.get("task", "boat")
        recorded = task_description(meta)  # what its bundle would record about the task
        opts = replace(opts, noise=opts.noise or "zero", proposals=1)
        policy = evaluation.torch_policy(learner, opts.noise, opts.seed)
    else:
        if opts.bundle is None:
            raise RunError("evaluate a --run or a --bundle")
        task = bundle_task(opts.bundle, opts.task)
        bundle = load_bundle(opts.bundle)
        decision = bundle.decision.with_changes(noise=opts.noise, proposals=opts.proposals,
                                                candidates=opts.candidates)
        runtime = Runtime(bundle, RuntimeConfig(seed=opts.seed, threads=opts.threads, decision=decision,
                                                override_decision=opts.override_decision, threshold=opts.threshold,
                                                out_of_range=opts.out_of_range))
        meta = {"algo": bundle.algo, **bundle.meta["training"], "trained_steps": bundle.meta["training"]["steps"],
                "train_seconds": float("nan")}
        recorded = bundle.meta["task"]
        policy, modes = evaluation.runtime_policy(runtime)
        opts = replace(opts, noise=decision.noise, proposals=decision.proposals)  # what the header reports
    scored = roll_out(policy, task, recorded, meta, opts)
    if runtime is not None:  # the deployed decision's: modes filled during the rollout, the summary's last keys
        scored.summary.update(decision_modes=dict(modes), threshold=runtime.threshold,
                              decision=runtime.decision.to_dict(), decision_warnings=runtime.warnings)
    return scored


def roll_out(policy: evaluation.Policy, task: str, recorded: dict, meta: dict, opts: EvaluateOptions) -> Evaluation:
    """The episodes of `task` in its simulator: the diff-drive robot's, a Safety Gymnasium
    task's or the boat's; refuses a task whose robot has none here."""
    if task == diffdrive_evaluate.TASK:  # its own simulator, for any spec of its messages (it checks)
        summary, result = diffdrive_evaluate.evaluate(policy, TaskSpec.of_task(recorded), opts.init_states,
                                                      opts.episodes, opts.steps, header(opts, meta, task),
                                                      opts.trajectories)
        return Evaluation(summary, result)
    no_simulator = simulator_mismatch(task, recorded.get("spec"))
    if no_simulator:
        bundle = opts.bundle or f"{opts.run}/bundle"
        raise RunError(f"{no_simulator}: there is nothing to roll out in closed loop. What can be done instead "
                       "is an open-loop replay of a recording through the deployed decision: python -m "
                       f"offline_train.replay --bag BAG --bundle {bundle} --out REPORT_DIR (per recorded state: "
                       "the logged and the policy's action, Q_safe, interventions, and the warning lead before "
                       "each logged violation)")
    if task != "boat":
        if opts.init_states or opts.trajectories:
            raise RunError("--init-states and --plot are for the boat and the diff-drive robot (a Safety "
                           "Gymnasium task has neither fixed starts nor a map)")
        return Evaluation(evaluate_safety_gym(policy, task, opts, meta, recorded.get("action_repeat", 1)))
    init_states = opts.init_states or "test"
    states = load_initial_states(init_states, opts.episodes)
    result = evaluation.rollout(policy, states, keep_trajectories=opts.trajectories,
                                steps=opts.steps or boat.EPISODE_STEPS)
    feasible = feasible_mask(states)
    summary = {**header(opts, meta, "boat"), "init_states": init_states, "steps": opts.steps or boat.EPISODE_STEPS,
               **evaluation.summarize(result, feasible)}
    return Evaluation(summary, result, feasible)


def header(opts: EvaluateOptions, meta: dict, task: str) -> dict:
    """What was evaluated: the summary's first keys, the same for every task."""
    return {"run": str(opts.run or opts.bundle), "task": task, "algo": meta["algo"],
            "variant": meta.get("variant") or meta["algo"],  # e.g. safefql-nodistill, a safefql learner
            "seed": meta["seed"],
            "trained_steps": meta["trained_steps"], "train_seconds": round(meta["train_seconds"], 1),
            "noise": opts.noise, "proposals": opts.proposals}


def evaluate_safety_gym(policy: evaluation.Policy, task: str, opts: EvaluateOptions, meta: dict,
                        action_repeat: int) -> dict:
    """Episodes with reset seeds seed.. on a Safety Gymnasium task, raw and DSRL-normalised;
    the policy acts every `action_repeat` steps, its training data's decision period."""
    result = gym_evaluation.rollout(policy, task, opts.episodes or GYM_EPISODES, opts.seed, opts.steps,
                                    action_repeat)
    return {**header(opts, meta, task), "action_repeat": action_repeat,
            **gym_evaluation.summarize(result, task)}


def describe(summary: dict) -> str:
    """The one line `evaluate` prints about a summary, for each task."""
    modes = summary.get("decision_modes")
    name, seed, task = summary["variant"], summary["seed"], summary["task"]
    if task == diffdrive_evaluate.TASK:
        return diffdrive_evaluate.describe(summary)
    if task != "boat":
        return (f"{name} seed {seed} on {task}: {gym_evaluation.describe(summary)}"
                + (f" | δ*={summary['threshold']:.3f}, decisions {modes}" if modes is not None else ""))
    f = summary["feasible"]
    return (f"{name} seed {seed}: {summary['count']} episodes from --init-states {summary['init_states']}, "
            f"mean return {summary['mean_return']:.1f}, mean violations {summary['mean_violations']:.3f}, "
            f"zero-violation {summary['zero_violation_rate']:.1%}, goal {summary['goal_reached_rate']:.1%} "
            f"| feasible ({f['count']}): "
            f"return {f.get('mean_return', float('nan')):.1f}, "
            f"zero-violation {f.get('zero_violation_rate', float('nan')):.1%} "
            f"| doomed: {summary['doomed']['count']}"
            + (f" | decisions {modes}" if modes is not None else ""))

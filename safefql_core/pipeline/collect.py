"""Behaviour datasets of the built-in tasks (the `collect` step; its command is
offline_train.collect, and `benchmark` generates its standard datasets through it).

The boat runs its simulator's behaviour mix; a Safety Gymnasium id (SafetyPointCircle1-v0,
SafetyPointGoal1-v0) runs that task's scripted mix (safefql_core.envs.safety_gym_behaviour)
and needs the optional safety-gymnasium package. SafetyHalfCheetahVelocity-v1 runs snapshots
of an online SAC run of varying speed (safefql_core.envs.velocity_behaviour; needs the
optional stable-baselines3==2.3.2), trained first into `policies` and reused afterwards.
The diff-drive robot's behaviour mix is recorded as a robot would record it
(safefql_core.envs.diffdrive_bag). `fmt="bag"` writes the boat's episodes as a rosbag2 on
the task spec's topics instead (safefql_core.bags).

Each collector writes `out` and returns what it wrote as a dict; `describe` is the line the
command prints about it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from safefql_core.bags import write_episodes
from safefql_core.data import Dataset, save_dataset
from safefql_core.envs import (
    boat,
    boat_behaviour,
    diffdrive,
    diffdrive_bag,
    diffdrive_behaviour,
    safety_gym_behaviour,
    velocity_behaviour,
)
from safefql_core.envs.safety_gym import make_env, margin_from_cost
from safefql_core.tasks import TaskSpec

DEFAULT_TRANSITIONS = 1_000_000


@dataclass(frozen=True)
class CollectOptions:
    """What to collect: `collect`'s flags, checked for the task by the command."""

    task: str
    out: str
    seed: int = 0
    fmt: str = "hdf5"                      # hdf5 or bag
    storage: str | None = None             # bag storage plugin (default mcap)
    transitions: int | None = None         # dataset size (default DEFAULT_TRANSITIONS) ...
    episodes: int | None = None            # ... or a number of episodes
    max_episode_steps: int | None = None   # Safety Gymnasium: cut episodes shorter
    action_repeat: int = 1                 # Safety Gymnasium: decide every K steps
    policies: str | None = None            # velocity tasks: the SAC snapshots' directory
    rl_timesteps: int = velocity_behaviour.DEFAULT_TIMESTEPS
    margin: str | None = None              # Safety Gymnasium: distance or cost
    starts: str = "sampled"                # diff-drive: sampled, or a fixed start set
    progress: bool = True


def collect(opts: CollectOptions) -> dict:
    """Collect `opts.task`'s behaviour data into `opts.out`; what was written, as a dict."""
    if opts.task == "diffdrive":
        return collect_diffdrive(opts)
    if opts.task != "boat":
        return collect_safety_gym(opts)
    return collect_boat(opts)


def collect_boat(opts: CollectOptions) -> dict:
    """The boat simulator's behaviour mix, as an HDF5 dataset or a rosbag2."""
    episodes = opts.episodes or -(-(opts.transitions or DEFAULT_TRANSITIONS) // boat.EPISODE_STEPS)
    arrays = boat_behaviour.collect(episodes, opts.seed, progress=opts.progress)
    family = arrays.pop("family")
    if opts.fmt == "bag":
        return save_bag(opts.out, opts.task, arrays, episodes, opts.storage or "mcap")
    attrs = {"task": "boat", "seed": opts.seed, "episodes": episodes, "control_period": boat.DT,
             "observation_fields": ["x", "y"], "action_fields": ["heading_x", "heading_y"],
             "action_low": [-1.0, -1.0], "action_high": [1.0, 1.0],
             "behaviour_mix": boat_behaviour.MIX, "source": "offline_train.collect (boat simulator)",
             # the ROS interface these episodes have on the robot (and in `--format bag`): its bundles run on the node
             "task_spec": TaskSpec.builtin("boat").to_dict()}
    data = Dataset(**arrays, attrs=attrs)
    save_dataset(opts.out, data)
    per_episode_cost = data.costs.reshape(episodes, -1).sum(axis=1)
    mix = {name: int((family[::boat.EPISODE_STEPS] == i).sum()) for i, name in enumerate(boat_behaviour.MIX)}
    return {"out": opts.out, "task": "boat", "format": "hdf5", "transitions": len(data), "episodes": episodes,
            "zero_violation_rate": float((per_episode_cost == 0).mean()), "behaviour_mix": mix}


def collect_safety_gym(opts: CollectOptions) -> dict:
    """Roll out a Safety Gymnasium task's scripted mix into a DSRL-layout HDF5 file.

    `transitions` N collects whole episodes until at least N environment steps exist (the
    navigation tasks never terminate early, so that is ceil(N / episode length) episodes);
    with `action_repeat` K they are stored as about N / K transitions, one per decision.
    Refuses a task that safety-gymnasium (optional) cannot make, with the install, and a
    distance margin where the task has none.
    """
    probe = make_env(opts.task, opts.seed, opts.max_episode_steps)  # episode length, action bounds
    probe.close()
    margin_kind = opts.margin or ("distance" if probe.has_geometric_margin else "cost")
    if margin_kind == "distance" and not probe.has_geometric_margin:
        raise ValueError(f"{opts.task} has no geometric safety margin (its cost is not a distance test on hazards "
                         "or walls); use --margin cost")
    episode_steps = probe.max_episode_steps
    if episode_steps is None:  # --transitions needs the episode length to count episodes
        raise ValueError(f"{opts.task} has no episode time limit; pass --episodes")
    episodes = opts.episodes or -(-(opts.transitions or DEFAULT_TRANSITIONS) // episode_steps)
    families, behaviour = behaviour_families(opts)
    arrays = safety_gym_behaviour.collect(opts.task, episodes, opts.seed, opts.max_episode_steps,
                                          progress=opts.progress, families=families,
                                          action_repeat=opts.action_repeat)
    family = arrays.pop("family")
    if margin_kind == "cost":
        arrays["margins"] = margin_from_cost(arrays["costs"])
        margin_note = "+25 if cost > 0 else -1 (SAFEFQL.md cost_scale 25)"
    else:
        margin_note = "signed distance to the failure set, > 0 exactly where cost > 0 (safety_gym.GEOMETRIC_MARGINS)"
    mix = safety_gym_behaviour.shares(families)
    attrs = {"task": opts.task, "seed": opts.seed, "episodes": episodes, "max_episode_steps": episode_steps,
             "action_low": probe.action_low.tolist(), "action_high": probe.action_high.tolist(),
             "behaviour_mix": mix, "margin": margin_note, "action_repeat": opts.action_repeat,
             "source": f"offline_train.collect (safety-gymnasium 1.0.0, {behaviour})"}
    data = Dataset(**arrays, attrs=attrs)
    save_dataset(opts.out, data)
    ends = np.flatnonzero((data.terminals > 0) | (data.timeouts > 0))
    return {"out": opts.out, "task": opts.task, "format": "hdf5", "transitions": len(data),
            "action_repeat": opts.action_repeat, "episodes": episodes, "episode_steps": episode_steps,
            "obs_dim": data.obs_dim, "act_dim": data.act_dim, "cost_rate": float(data.costs.mean()),
            "margin": margin_kind,
            "episodes_per_family": {name: int((family[ends] == i).sum()) for i, name in enumerate(mix)},
            "cost_rate_per_family": {name: round(float(data.costs[family == i].mean()), 3)
                                     for i, name in enumerate(mix) if (family == i).any()}}


def behaviour_families(opts: CollectOptions) -> tuple[dict[str, safety_gym_behaviour.Family], str]:
    """The task's behaviour families and a description for the dataset's `source` attr.

    Velocity tasks train their SAC snapshots first when `policies` does not hold them.
    """
    if opts.task not in velocity_behaviour.TASKS:
        return safety_gym_behaviour.MIXES[opts.task], "scripted behaviour"
    policies = opts.policies or f"{opts.out}.policies"
    velocity_behaviour.train_policies(opts.task, policies, opts.seed, opts.rl_timesteps, progress=opts.progress)
    return (velocity_behaviour.families(opts.task, policies),
            f"SAC snapshots from {policies}, {opts.rl_timesteps} steps, stable-baselines3")


def diffdrive_episodes(opts: CollectOptions) -> tuple[int, np.ndarray | None]:
    """(episodes, fixed start poses or None) of a diff-drive collection; refuses a count the
    start set cannot give."""
    starts = diffdrive.START_SETS[opts.starts]() if opts.starts != "sampled" else None
    default = diffdrive_behaviour.DEFAULT_EPISODES if starts is None else len(starts)
    episodes = opts.episodes or (-(-opts.transitions // diffdrive.EPISODE_STEPS) if opts.transitions else default)
    if episodes <= 0 or (starts is not None and episodes > len(starts)):
        raise ValueError(f"--episodes / --transitions must be positive"
                         f"{'' if starts is None else f' and at most {len(starts)}'}")
    return episodes, None if starts is None else starts[:episodes]


def collect_diffdrive(opts: CollectOptions) -> dict:
    """The diff-drive robot's behaviour mix as a rosbag2 (Odometry, LaserScan, TwistStamped)."""
    episodes, starts = diffdrive_episodes(opts)
    data = diffdrive_behaviour.collect(episodes, opts.seed, starts, progress=opts.progress)
    storage = opts.storage or "mcap"
    count = diffdrive_bag.write_episodes(opts.out, data, storage)
    return {"out": opts.out, "task": "diffdrive", "format": "bag", "storage": storage, "messages": count,
            "episodes": episodes, "episode_steps": diffdrive.EPISODE_STEPS, "commands": int(data.lengths.sum()),
            "behaviour": data.summary()}


def save_bag(out: str, task: str, arrays: dict[str, np.ndarray], episodes: int, storage: str) -> dict:
    """Episode-major flat arrays -> states s_0..s_T and actions per episode -> a rosbag2."""
    obs = arrays["observations"].reshape(episodes, boat.EPISODE_STEPS, -1)
    last = arrays["next_observations"].reshape(episodes, boat.EPISODE_STEPS, -1)[:, -1:]
    actions = arrays["actions"].reshape(episodes, boat.EPISODE_STEPS, -1)
    count = write_episodes(out, TaskSpec.builtin(task), np.concatenate([obs, last], axis=1), actions, storage)
    return {"out": out, "task": task, "format": "bag", "storage": storage, "messages": count, "episodes": episodes,
            "episode_steps": boat.EPISODE_STEPS}


def describe(result: dict) -> str:
    """The line `collect` prints about what it wrote."""
    r = result
    if r["task"] == "diffdrive":
        b = r["behaviour"]
        return (f"wrote {r['out']}: rosbag2 ({r['storage']}), {r['messages']:,} messages, {r['episodes']} episodes "
                f"of <= {r['episode_steps']} steps ({r['commands']:,} commands), "
                f"{b['zero_collision_rate']:.1%} without collision, {b['goal_reached_rate']:.1%} reached the goal")
    if r["format"] == "bag":
        return (f"wrote {r['out']}: rosbag2 ({r['storage']}), {r['messages']:,} messages, {r['episodes']} episodes "
                f"of {r['episode_steps']} steps")
    if r["task"] == "boat":
        return (f"wrote {r['out']}: {r['transitions']:,} transitions, {r['episodes']} episodes, "
                f"{r['zero_violation_rate']:.1%} episodes without violations, behaviour mix {r['behaviour_mix']}")
    repeat = f", one per {r['action_repeat']} steps" if r["action_repeat"] > 1 else ""
    return (f"wrote {r['out']}: {r['transitions']:,} transitions{repeat}, {r['episodes']} episodes of "
            f"<= {r['episode_steps']} steps, obs_dim {r['obs_dim']}, act_dim {r['act_dim']}, cost rate "
            f"{r['cost_rate']:.3f}, {r['margin']} margin, episodes per family {r['episodes_per_family']}, "
            f"cost rate per family {r['cost_rate_per_family']}")

"""`python -m offline_train.collect`: generate a behaviour dataset for a built-in task.

`--task boat` runs the boat simulator's behaviour mix; a Safety Gymnasium id
(SafetyPointCircle1-v0, SafetyPointGoal1-v0) runs that task's scripted mix
(safefql_core.envs.safety_gym_behaviour) and needs the optional safety-gymnasium package.
SafetyHalfCheetahVelocity-v1 runs snapshots of an online SAC run of varying speed
(safefql_core.envs.velocity_behaviour; needs the optional stable-baselines3==2.3.2): the
snapshots are trained first (~15-20 min on one core for the default 100k steps) into
`--policies` (default: `<out>.policies/` beside the dataset) and reused afterwards.

`--format bag` writes the same episodes as a rosbag2 on the task spec's topics instead
(offline_train.bags: episodes separated by a 1 s silence, which offline_train.convert
splits on), to exercise the bag workflow without a robot.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from offline_train.bags import STORAGES, BagError, write_episodes
from offline_train.cli import at_least
from safefql_core.data import Dataset, DatasetError, check_output, save_dataset
from safefql_core.envs import boat, boat_behaviour, safety_gym_behaviour, velocity_behaviour
from safefql_core.envs.safety_gym import make_env, margin_from_cost
from safefql_core.tasks import TaskSpec

DEFAULT_TRANSITIONS = 1_000_000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m offline_train.collect", description=__doc__)
    p.add_argument("--task", default="boat", choices=["boat", *safety_gym_behaviour.TASKS, *velocity_behaviour.TASKS],
                   help="built-in task")
    p.add_argument("--seed", type=at_least(0), default=0)
    p.add_argument("--out", required=True,
                   help="output HDF5 path, e.g. data/boat.h5 (a new directory for --format bag)")
    p.add_argument("--format", default="hdf5", choices=["hdf5", "bag"],
                   help="hdf5 dataset (default) or rosbag2 on the task spec's topics")
    p.add_argument("--storage", choices=sorted(STORAGES), help="rosbag2 storage plugin for --format bag (default mcap)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--transitions", type=at_least(1), help=f"dataset size (default {DEFAULT_TRANSITIONS:,})")
    size.add_argument("--episodes", type=at_least(1), help="number of episodes (boat: 400 steps each)")
    p.add_argument("--max-episode-steps", type=at_least(1),
                   help="Safety Gymnasium only: cut episodes shorter than the task's own limit")
    p.add_argument("--action-repeat", type=at_least(1), default=1, metavar="K",
                   help="Safety Gymnasium only: the behaviour decides every K steps and holds its action in "
                        "between; one transition per decision (default 1: every step, as DSRL files are). "
                        "Policies trained on the data act every K steps too (docs/DESIGN.md, \"Action repeat\")")
    p.add_argument("--policies", help="velocity tasks: directory of the SAC behaviour snapshots "
                   "(trained there if absent; default <out>.policies)")
    p.add_argument("--rl-timesteps", type=at_least(1), default=velocity_behaviour.DEFAULT_TIMESTEPS,
                   help="velocity tasks: SAC environment steps when the snapshots are trained "
                   f"(default {velocity_behaviour.DEFAULT_TIMESTEPS:,})")
    p.add_argument("--margin", choices=["distance", "cost"],
                   help="Safety Gymnasium: the stored safety margin. distance: signed distance to the "
                        "failure set, from the simulator (hazards, Circle's walls; the default where the task "
                        "has one); cost: +25 / -1 from the 0/1 cost, as a DSRL file has it (the default elsewhere)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.policies and args.task not in velocity_behaviour.TASKS:
        p.error(f"--policies only applies to {', '.join(velocity_behaviour.TASKS)}")
    try:  # before the work: a directory or an unwritable place as --out must not cost a collection
        check_output(args.out, directory=args.format == "bag")
    except DatasetError as exc:
        p.error(str(exc))
    if args.task != "boat":
        if args.format != "hdf5" or args.storage:
            p.error("Safety Gymnasium tasks are written as --format hdf5 only")
        return collect_safety_gym(args)
    if args.max_episode_steps or args.action_repeat != 1:
        p.error("--max-episode-steps and --action-repeat only apply to Safety Gymnasium tasks")

    episodes = args.episodes or -(-(args.transitions or DEFAULT_TRANSITIONS) // boat.EPISODE_STEPS)
    if args.storage and args.format != "bag":
        p.error("--storage only applies to --format bag")
    arrays = boat_behaviour.collect(episodes, args.seed, progress=not args.no_progress)
    family = arrays.pop("family")
    if args.format == "bag":
        return save_bag(args.out, args.task, arrays, episodes, args.storage or "mcap")
    attrs = {"task": "boat", "seed": args.seed, "episodes": episodes, "control_period": boat.DT,
             "observation_fields": ["x", "y"], "action_fields": ["heading_x", "heading_y"],
             "action_low": [-1.0, -1.0], "action_high": [1.0, 1.0],
             "behaviour_mix": boat_behaviour.MIX, "source": "offline_train.collect (boat simulator)",
             # the ROS interface these episodes have on the robot (and in `--format bag`): its bundles run on the node
             "task_spec": TaskSpec.builtin("boat").to_dict()}
    data = Dataset(**arrays, attrs=attrs)
    save_dataset(args.out, data)
    per_episode_cost = data.costs.reshape(episodes, -1).sum(axis=1)
    print(f"wrote {args.out}: {len(data):,} transitions, {episodes} episodes, "
          f"{(per_episode_cost == 0).mean():.1%} episodes without violations, "
          f"behaviour mix {dict(zip(boat_behaviour.MIX, [int((family[::boat.EPISODE_STEPS] == i).sum()) for i in range(len(boat_behaviour.MIX))]))}")
    return 0


def collect_safety_gym(args: argparse.Namespace) -> int:
    """Roll out a Safety Gymnasium task's scripted mix into a DSRL-layout HDF5 file.

    `--transitions N` collects whole episodes until at least N environment steps exist (the
    navigation tasks never terminate early, so that is ceil(N / episode length) episodes);
    with `--action-repeat K` they are stored as about N / K transitions, one per decision.
    """
    try:
        probe = make_env(args.task, args.seed, args.max_episode_steps)  # episode length, action bounds
    except ImportError as exc:  # safety-gymnasium is optional; the message names the install
        print(f"error: {exc}", file=sys.stderr)
        return 2
    probe.close()
    margin_kind = args.margin or ("distance" if probe.has_geometric_margin else "cost")
    if margin_kind == "distance" and not probe.has_geometric_margin:
        print(f"error: {args.task} has no geometric safety margin (its cost is not a distance test on hazards "
              "or walls); use --margin cost", file=sys.stderr)
        return 2
    episode_steps = probe.max_episode_steps
    episodes = args.episodes or -(-(args.transitions or DEFAULT_TRANSITIONS) // episode_steps)
    try:
        families, behaviour = behaviour_families(args)
    except (ImportError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    arrays = safety_gym_behaviour.collect(args.task, episodes, args.seed, args.max_episode_steps,
                                          progress=not args.no_progress, families=families,
                                          action_repeat=args.action_repeat)
    family = arrays.pop("family")
    if margin_kind == "cost":
        arrays["margins"] = margin_from_cost(arrays["costs"])
        margin_note = "+25 if cost > 0 else -1 (SAFEFQL.md cost_scale 25)"
    else:
        margin_note = "signed distance to the failure set, > 0 exactly where cost > 0 (safety_gym.GEOMETRIC_MARGINS)"
    mix = safety_gym_behaviour.shares(families)
    attrs = {"task": args.task, "seed": args.seed, "episodes": episodes, "max_episode_steps": episode_steps,
             "action_low": probe.action_low.tolist(), "action_high": probe.action_high.tolist(),
             "behaviour_mix": mix, "margin": margin_note, "action_repeat": args.action_repeat,
             "source": f"offline_train.collect (safety-gymnasium 1.0.0, {behaviour})"}
    data = Dataset(**arrays, attrs=attrs)
    save_dataset(args.out, data)
    ends = np.flatnonzero((data.terminals > 0) | (data.timeouts > 0))
    per_family = {name: int((family[ends] == i).sum()) for i, name in enumerate(mix)}
    cost_rate = {name: round(float(data.costs[family == i].mean()), 3) for i, name in enumerate(mix)
                 if (family == i).any()}
    repeat = f", one per {args.action_repeat} steps" if args.action_repeat > 1 else ""
    print(f"wrote {args.out}: {len(data):,} transitions{repeat}, {episodes} episodes of <= {episode_steps} steps, "
          f"obs_dim {data.obs_dim}, act_dim {data.act_dim}, cost rate {data.costs.mean():.3f}, {margin_kind} margin, "
          f"episodes per family {per_family}, cost rate per family {cost_rate}")
    return 0


def behaviour_families(args: argparse.Namespace) -> tuple[dict[str, safety_gym_behaviour.Family], str]:
    """The task's behaviour families and a description for the dataset's `source` attr.

    Velocity tasks train their SAC snapshots first when `--policies` does not hold them.
    """
    if args.task not in velocity_behaviour.TASKS:
        return safety_gym_behaviour.MIXES[args.task], "scripted behaviour"
    policies = args.policies or f"{args.out}.policies"
    velocity_behaviour.train_policies(args.task, policies, args.seed, args.rl_timesteps,
                                      progress=not args.no_progress)
    return (velocity_behaviour.families(args.task, policies),
            f"SAC snapshots from {policies}, {args.rl_timesteps} steps, stable-baselines3")


def save_bag(out: str, task: str, arrays: dict[str, np.ndarray], episodes: int, storage: str) -> int:
    """Episode-major flat arrays -> states s_0..s_T and actions per episode -> a rosbag2."""
    obs = arrays["observations"].reshape(episodes, boat.EPISODE_STEPS, -1)
    last = arrays["next_observations"].reshape(episodes, boat.EPISODE_STEPS, -1)[:, -1:]
    actions = arrays["actions"].reshape(episodes, boat.EPISODE_STEPS, -1)
    try:
        count = write_episodes(out, TaskSpec.builtin(task), np.concatenate([obs, last], axis=1), actions, storage)
    except BagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}: rosbag2 ({storage}), {count:,} messages, {episodes} episodes of {boat.EPISODE_STEPS} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())

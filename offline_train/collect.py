"""`python -m offline_train.collect`: generate a behaviour dataset for a built-in task.

`--task boat` runs the boat simulator's behaviour mix; a Safety Gymnasium id
(SafetyPointCircle1-v0, SafetyPointGoal1-v0) runs that task's scripted mix
(safefql_core.envs.safety_gym_behaviour) and needs the optional safety-gymnasium package.
SafetyHalfCheetahVelocity-v1 runs snapshots of an online SAC run of varying speed
(safefql_core.envs.velocity_behaviour; needs the optional stable-baselines3==2.3.2): the
snapshots are trained first (~15-20 min on one core for the default 100k steps) into
`--policies` (default: `<out>.policies/` beside the dataset) and reused afterwards.

`--format bag` writes the same episodes as a rosbag2 on the task spec's topics instead
(safefql_core.bags: episodes separated by a 1 s silence, which offline_train.convert
splits on), to exercise the bag workflow without a robot.

`--task diffdrive` runs the IR-SIM diff-drive robot's behaviour mix
(safefql_core.envs.diffdrive_behaviour) and records it as a robot would: Odometry,
LaserScan and TwistStamped under /diffdrive (safefql_core.envs.diffdrive_bag); `--format bag`
only, since config/diffdrive.yaml picks the observation from those messages at conversion.
"""
from __future__ import annotations

import argparse
import json
import sys

from offline_train.cli import at_least
from safefql_core.bags import STORAGES
from safefql_core.data import DatasetError, check_output
from safefql_core.envs import diffdrive, safety_gym_behaviour, velocity_behaviour
from safefql_core.pipeline.collect import (
    DEFAULT_TRANSITIONS,
    CollectOptions,
    collect,
    describe,
    diffdrive_episodes,
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m offline_train.collect", description=__doc__)
    p.add_argument("--task", default="boat",
                   choices=["boat", "diffdrive", *safety_gym_behaviour.TASKS, *velocity_behaviour.TASKS],
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
    p.add_argument("--starts", choices=["sampled", *diffdrive.START_SETS], default="sampled",
                   help="diffdrive only: start poses, sampled from --seed (default), or the fixed validation / "
                        "evaluation set (all of it, or its first --episodes), to measure the behaviour mix on the "
                        "starts policies are scored on")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.policies and args.task not in velocity_behaviour.TASKS:
        p.error(f"--policies only applies to {', '.join(velocity_behaviour.TASKS)}")
    try:  # before the work: a directory or an unwritable place as --out must not cost a collection
        check_output(args.out, directory=args.format == "bag")
    except DatasetError as exc:
        p.error(str(exc))
    if args.task == "diffdrive":
        check_diffdrive(p, args)
    elif args.starts != "sampled":
        p.error("--starts only applies to --task diffdrive")
    elif args.task != "boat":
        if args.format != "hdf5" or args.storage:
            p.error("Safety Gymnasium tasks are written as --format hdf5 only")
    elif args.max_episode_steps or args.action_repeat != 1:
        p.error("--max-episode-steps and --action-repeat only apply to Safety Gymnasium tasks")
    elif args.storage and args.format != "bag":
        p.error("--storage only applies to --format bag")
    try:
        result = collect(options(args))
    except (ImportError, ValueError) as exc:  # an optional package missing, a bag not written, a task's limits
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(describe(result))
    if args.task == "diffdrive":
        print(json.dumps({"behaviour": result["behaviour"]}))
    return 0


def options(args: argparse.Namespace) -> CollectOptions:
    return CollectOptions(task=args.task, out=args.out, seed=args.seed, fmt=args.format, storage=args.storage,
                          transitions=args.transitions, episodes=args.episodes,
                          max_episode_steps=args.max_episode_steps, action_repeat=args.action_repeat,
                          policies=args.policies, rl_timesteps=args.rl_timesteps, margin=args.margin,
                          starts=args.starts, progress=not args.no_progress)


def check_diffdrive(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The flags that do not apply to the diff-drive robot, refused as usage errors."""
    if args.format != "bag":
        p.error("--task diffdrive records a bag (--format bag): its observation features are chosen from the "
                "Odometry and LaserScan messages by config/diffdrive.yaml when the bag is converted "
                "(fit --bag BAG --config config/diffdrive.yaml)")
    if args.max_episode_steps or args.action_repeat != 1 or args.margin:
        p.error("--max-episode-steps, --action-repeat and --margin do not apply to --task diffdrive")
    try:
        diffdrive_episodes(options(args))
    except ValueError as exc:
        p.error(str(exc))


if __name__ == "__main__":
    sys.exit(main())

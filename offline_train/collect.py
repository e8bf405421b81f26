"""`python -m offline_train.collect`: generate a behaviour dataset for a built-in task."""
from __future__ import annotations

import argparse
import sys

from safefql_core.data import Dataset, save_dataset
from safefql_core.envs import boat, boat_behaviour

DEFAULT_TRANSITIONS = 1_000_000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m offline_train.collect", description=__doc__)
    p.add_argument("--task", default="boat", choices=["boat"], help="built-in task")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output HDF5 path, e.g. data/boat.h5")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--transitions", type=int, help=f"dataset size (default {DEFAULT_TRANSITIONS:,})")
    size.add_argument("--episodes", type=int, help="number of 400-step episodes")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    episodes = args.episodes or -(-(args.transitions or DEFAULT_TRANSITIONS) // boat.EPISODE_STEPS)
    if episodes <= 0:
        p.error("--episodes / --transitions must be positive")
    arrays = boat_behaviour.collect(episodes, args.seed, progress=not args.no_progress)
    family = arrays.pop("family")
    attrs = {"task": "boat", "seed": args.seed, "episodes": episodes, "control_period": boat.DT,
             "observation_fields": ["x", "y"], "action_fields": ["heading_x", "heading_y"],
             "action_low": [-1.0, -1.0], "action_high": [1.0, 1.0],
             "behaviour_mix": boat_behaviour.MIX, "source": "offline_train.collect (boat simulator)"}
    data = Dataset(**arrays, attrs=attrs)
    save_dataset(args.out, data)
    per_episode_cost = data.costs.reshape(episodes, -1).sum(axis=1)
    print(f"wrote {args.out}: {len(data):,} transitions, {episodes} episodes, "
          f"{(per_episode_cost == 0).mean():.1%} episodes without violations, "
          f"behaviour mix {dict(zip(boat_behaviour.MIX, [int((family[::boat.EPISODE_STEPS] == i).sum()) for i in range(len(boat_behaviour.MIX))]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

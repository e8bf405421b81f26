"""Ground-truth reference numbers (the DP reference) for a task's initial states.

    python -m offline_train.reference --task boat [--init-states test|validation|evaluation|states.npy]
        [--json out.json] [--seed S [--num-states N]]

By default the test set is used, the starts `offline_train.evaluate` reports on, so every
return can be read beside the best achievable one on the same starts; `--init-states` takes
another named set (safefql_core.envs.boat.STATE_SETS) or an (N, 2) .npy array, and `--seed`
samples fresh safe states instead. Only the boat task has a
reference (safefql_core.envs.boat_reference); the computation lives there, this is the
command-line entry point.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from safefql_core.envs.boat import STATE_SETS, load_initial_states, sample_safe_states
from safefql_core.envs.boat_reference import summarise
from safefql_core.pipeline.files import prepare_output_file
from safefql_core.training import RunError

SUPPORTED_TASKS = ("boat",)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, help="task name; only 'boat' is supported")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--init-states", default="test",
                        help=f"a named set ({', '.join(STATE_SETS)}; default test) or an (N, 2) .npy file")
    source.add_argument("--seed", type=int, help="sample fresh safe initial states with this seed")
    parser.add_argument("--num-states", type=int, default=500, help="states sampled with --seed")
    parser.add_argument("--json", type=Path, help="also write the summary to this file")
    args = parser.parse_args(argv)
    if args.task not in SUPPORTED_TASKS:
        parser.error(
            f"no reference for task {args.task!r}: only {', '.join(SUPPORTED_TASKS)} has a "
            "ground-truth reference"
        )
    return args


def load_states(args: argparse.Namespace) -> tuple[np.ndarray, str]:
    """The initial states and a description of where they came from."""
    if args.seed is not None:
        rng = np.random.default_rng(args.seed)
        return sample_safe_states(rng, args.num_states), f"sampled, seed {args.seed}"
    return load_initial_states(args.init_states), args.init_states


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        states, source = load_states(args)
        json_path = prepare_output_file(args.json, "--json")
    except (ValueError, RunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {"task": args.task, "states": source, **summarise(states)}
    text = json.dumps(summary, indent=2)
    print(text)
    if json_path is not None:
        json_path.write_text(text + "\n")
        print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

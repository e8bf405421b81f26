"""`python -m offline_train.calibrate`: conformal calibration of the run-time threshold δ*."""
from __future__ import annotations

import argparse
import json
import sys

from offline_train.cli import add_allow_partial_argument, add_decision_arguments, at_least, decision_changes
from safefql_core.data import DatasetError
from safefql_core.pipeline.calibrate import SOURCES, calibrate_run, describe
from safefql_core.pipeline.files import prepare_output_file
from safefql_core.training import RunError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m offline_train.calibrate", description=__doc__)
    p.add_argument("--run", required=True)
    p.add_argument("--epsilon", type=float, default=0.05, help="allowed violation probability")
    p.add_argument("--n", type=int, default=None,
                   help="held-out states per set (two sets are drawn); default: 2000, or the simulator's own "
                        "(the diff-drive robot's: 500, its lidar simulation is slow)")
    p.add_argument("--method", choices=["split", "beta"], default="beta",
                   help="beta (default): the largest δ whose certified states violate at rate <= ε with "
                   "confidence 1 - beta; split: SAFEFQL.md's split-conformal step on R = y - V̂, which also "
                   "pays for V̂'s optimism in states far from any obstacle (docs/DESIGN.md)")
    p.add_argument("--beta", type=float, default=0.05, help="1 - confidence (beta method, coverage bounds)")
    p.add_argument("--source", choices=SOURCES, default="auto",
                   help="sim: policy rollouts in the task's simulator; data: logged episodes (weaker); auto "
                        "(default): sim where the run's robot has a simulator (the boat), data otherwise")
    p.add_argument("--horizon", type=int,
                   help="ticks over which the realised outcome y = max margin is taken (default: the rest of "
                        "the episode; boat sim: its 400 ticks). With episodes much longer than the safety "
                        "critic's horizon 1/(1 - gamma_c), set it to that horizon (Safety Gymnasium: 100), or "
                        "almost every logged state has a violation somewhere ahead (docs/DESIGN.md). Counted in "
                        "transitions: with `collect --action-repeat K` data one is K steps, so 100 / K")
    p.add_argument("--seed", type=at_least(0), default=0)
    p.add_argument("--json", help="also write the result here")
    p.add_argument("--plot", help="score histogram PNG (default <run>/calibration_scores.png)")
    add_decision_arguments(p)
    add_allow_partial_argument(p)
    args = p.parse_args(argv)
    try:
        json_path = prepare_output_file(args.json, "--json")
        result = calibrate_run(args.run, args.epsilon, args.n, args.method, args.beta, args.source,
                               args.seed, args.plot, args.horizon, args.allow_partial, log=print,
                               decision_changes=decision_changes(args))
    except (RunError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if json_path:
        json_path.write_text(json.dumps(result, indent=2))
        print(f"wrote {json_path}")
    print(describe(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m offline_train.replay`: how would the deployed policy have acted on a recording?

    python -m offline_train.replay --bag bags/run1 --bundle bundle/ --out report/

The bag is read and aligned to the control grid exactly as `offline_train.convert` does it
(same task spec, same code), then every recorded episode goes through the runtime decision
the controller node runs (`safefql_core.runtime`), with a fresh runtime seeded by --seed per
episode:

* open loop — at each recorded state: the logged vs the policy action, Q_safe, V_safe, the
  margin to δ*, mode and reason, the true safety margin l(s), and whether the calibrated check
  would have refused the logged action; per episode: agreement, interventions, violations and
  the warning lead time before the first one (`safefql_core.replay.warning_lead`);
* closed loop (boat only: it needs the simulator) — each episode re-simulated from its first
  state for its recorded length under the decision: return, violating steps, goal reached,
  against the recording.

Writes replay.json (open_loop / closed_loop: per-episode rows and a summary), ticks.csv (one
row per open-loop tick), map.png (boat) and safety.png into --out. No ROS needed.
"""
from __future__ import annotations

import argparse
import sys

from offline_train.cli import add_bag_arguments, bag_options
from safefql_core.pipeline.replay_report import ERRORS, ReplayOptions, describe, run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m offline_train.replay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bag", required=True, help="rosbag2 directory (mcap or sqlite3) or a bare .mcap/.db3 file")
    p.add_argument("--bundle", required=True, help="policy bundle directory (python -m offline_train.export)")
    p.add_argument("--out", required=True, help="report directory, e.g. report/")
    p.add_argument("--config", help="task YAML with a `spec:` section (default: the spec the bundle records); "
                                    "refused unless it matches that spec (it may rename topics)")
    p.add_argument("--seed", type=int, default=0, help="seed of the runtime's candidate sampler (default 0)")
    p.add_argument("--episodes", type=int, help="replay only the first N recorded episodes")
    p.add_argument("--no-closed-loop", action="store_true", help="skip the simulator re-runs")
    add_bag_arguments(p)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.episodes is not None and args.episodes <= 0:
        p.error("--episodes must be positive")
    try:
        report = run(ReplayOptions(bag=args.bag, bundle=args.bundle, out=args.out, config=args.config,
                                   seed=args.seed, episodes=args.episodes, closed_loop=not args.no_closed_loop,
                                   bag_options=bag_options(args), progress=not args.no_progress))
    except ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(describe(report, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

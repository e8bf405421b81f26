"""`python -m offline_train.export`: write the policy bundle (ONNX + bundle.json) for a run."""
from __future__ import annotations

import argparse
import sys

from offline_train.cli import add_allow_partial_argument, at_least
from safefql_core.bundle import BundleError
from safefql_core.pipeline.export import describe, export_run
from safefql_core.training import RunError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m offline_train.export", description=__doc__)
    p.add_argument("--run", required=True)
    p.add_argument("--out", required=True, help="bundle directory")
    p.add_argument("--seed", type=at_least(0), default=0, help="seed of the example inputs stored for parity checks")
    add_allow_partial_argument(p)
    args = p.parse_args(argv)
    try:
        doc = export_run(args.run, args.out, args.seed, args.allow_partial)
    except (RunError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(describe(args.out, doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())

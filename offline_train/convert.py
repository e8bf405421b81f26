"""`python -m offline_train.convert`: rosbag2 recordings -> an HDF5 dataset, through the task spec.

The task spec (config YAML `spec:` section; the built-in boat spec by default) says which
topics and fields to read; `safefql_core.alignment` puts them on the control grid. `--bag`
takes rosbag2 directories, bare .mcap/.db3 files and folders of them; each bag is aligned
on its own, so no episode is joined across two bags, and the transitions of all of them
make one dataset.
"""
from __future__ import annotations

import argparse
import sys

from offline_train.cli import add_bag_arguments, bag_options
from safefql_core.data import check_output
from safefql_core.pipeline.convert import ERRORS, convert, load_spec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m offline_train.convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bag", required=True, nargs="+",
                   help="rosbag2 directories (mcap or sqlite3), bare .mcap/.db3 files, or folders of them")
    p.add_argument("--config", help="task YAML with a `spec:` section (default: built-in boat spec)")
    p.add_argument("--out", required=True, help="output HDF5 path, e.g. data/boat_bag.h5")
    add_bag_arguments(p)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        check_output(args.out)  # before reading the bag
        result = convert(args.bag, load_spec(args.config), args.out, bag_options(args),
                         progress=not args.no_progress)
    except ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())

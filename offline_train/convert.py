"""`python -m offline_train.convert`: a rosbag2 -> an HDF5 dataset, through the task spec.

The task spec (config YAML `spec:` section; the built-in boat spec by default) says which
topics and fields to read; `safefql_core.alignment` puts them on the control grid.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from offline_train.bags import DEFAULT_TYPESTORE, TYPESTORES, BagError, BagSource, read_series
from safefql_core.alignment import NONFINITE_POLICIES, AlignmentError, AlignmentReport, build_transitions
from safefql_core.data import Dataset, DatasetError, check_output, save_dataset, validate
from safefql_core.tasks import TaskSpec, TaskSpecError

ERRORS = (BagError, TaskSpecError, AlignmentError, DatasetError)


@dataclass
class Conversion:
    out: Path
    spec: TaskSpec
    source: BagSource
    report: AlignmentReport
    on_nonfinite: str

    def summary(self) -> str:
        """What a user needs to trust the dataset: sizes, and every drop with its reason."""
        r, ms = self.report, self.spec.max_age * 1e3
        dropped = ", ".join(f"{n:,} {why}" for why, n in r.dropped.items()) or "none"
        lines = [
            f"converted {self.source.path} ({self.source.storage}, {self.source.messages:,} messages, "
            f"content hash {self.source.content_hash}) -> {self.out}",
            f"  {r.episodes} episode(s) (split where {self.spec.state.topic} is silent > {ms:g} ms), "
            f"{r.ticks:,} ticks every {self.spec.control_period * 1e3:g} ms",
            f"  {r.transitions:,} transitions, {r.timeouts:,} time-outs, 0 terminals (a bag has no terminal signal)",
            f"  ticks dropped: {dropped}",
        ]
        if r.nonfinite_samples:
            counts = ", ".join(f"{n:,} {role}" for role, n in r.nonfinite_samples.items())
            lines.append(f"  non-finite samples: {counts} (--on-nonfinite {self.on_nonfinite})")
        if r.clipped_actions:
            lines.append(f"  {r.clipped_actions:,} commands outside the spec's bounds were clipped to them")
        return "\n".join(lines)


def load_spec(config: str | None) -> TaskSpec:
    """The task spec of a config YAML, or the built-in boat spec when none is given."""
    return TaskSpec.load(config) if config else TaskSpec.builtin("boat")


def convert(bag: str | Path, spec: TaskSpec, out: str | Path, typestore: str = DEFAULT_TYPESTORE,
            on_nonfinite: str = "refuse", progress: bool = True) -> Conversion:
    """Read, align, validate and save; the dataset's attributes record spec and source."""
    series, source = read_series(bag, spec, typestore, progress)
    arrays, report = build_transitions(spec, series, on_nonfinite)
    attrs = {
        "task": spec.name,
        "task_spec": spec.to_dict(),
        "observation_fields": spec.state.names,
        "action_fields": spec.command.names,
        "action_low": list(spec.action_low),
        "action_high": list(spec.action_high),
        "control_period": spec.control_period,
        "max_age": spec.max_age,
        "source": "offline_train.convert (rosbag2)",
        "bag": str(Path(bag).resolve()),
        "bag_content_hash": source.content_hash,
        "bag_storage": source.storage,
        "typestore": typestore,
        "alignment": asdict(report),
    }
    data = Dataset(**arrays, attrs=attrs)
    validate(data, str(bag))
    save_dataset(out, data)
    return Conversion(Path(out), spec, source, report, on_nonfinite)


def add_bag_arguments(p: argparse.ArgumentParser) -> None:
    """The conversion options, shared by `convert` and `fit --bag`."""
    p.add_argument("--typestore", default=DEFAULT_TYPESTORE, choices=sorted(TYPESTORES),
                   help="message definitions for bags that do not store their own (default: %(default)s)")
    p.add_argument("--on-nonfinite", default="refuse", choices=NONFINITE_POLICIES,
                   help="NaN/inf in a used field: refuse (default) or drop the ticks that use it")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m offline_train.convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bag", required=True, help="rosbag2 directory (mcap or sqlite3)")
    p.add_argument("--config", help="task YAML with a `spec:` section (default: built-in boat spec)")
    p.add_argument("--out", required=True, help="output HDF5 path, e.g. data/boat_bag.h5")
    add_bag_arguments(p)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        check_output(args.out)  # before reading the bag
        result = convert(args.bag, load_spec(args.config), args.out, args.typestore, args.on_nonfinite,
                         progress=not args.no_progress)
    except ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""rosbag2 recordings -> an HDF5 dataset, through the task spec (the `convert` step; its
command is offline_train.convert, and `fit --bag` and `replay` read bags through it too).

The task spec (config YAML `spec:` section; the built-in boat spec by default) says which
topics and fields to read; `safefql_core.alignment` puts them on the control grid. `--bag`
takes rosbag2 directories, bare .mcap/.db3 files and folders of them; each bag is aligned
on its own, so no episode is joined across two bags, and the transitions of all of them
make one dataset.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from safefql_core.alignment import (
    AlignmentError,
    AlignmentReport,
    build_transitions,
)
from safefql_core.bags import (
    DEFAULT_TYPESTORE,
    BagError,
    BagSource,
    bag_paths,
    content_hash,
    read_series,
    typestore,
)
from safefql_core.data import Dataset, DatasetError, save_dataset, validate
from safefql_core.tasks import TaskSpec, TaskSpecError

ERRORS = (BagError, TaskSpecError, AlignmentError, DatasetError)


@dataclass(frozen=True)
class BagOptions:
    """How bags are read and aligned: the options offline_train.cli.add_bag_arguments declares."""

    typestore: str = DEFAULT_TYPESTORE
    msg: tuple[str, ...] = ()
    on_nonfinite: str = "refuse"
    on_duplicate: str = "refuse"
    allow_partial: bool = False


@dataclass
class Conversion:
    out: Path
    spec: TaskSpec
    sources: list[BagSource]
    report: AlignmentReport
    options: BagOptions
    unsafe: int = 0  # transitions whose safety margin is > 0

    @property
    def content_hash(self) -> str:
        return content_hash(self.sources)

    def summary(self) -> str:
        """What a user needs to trust the dataset: sizes, every drop and repair with its reason."""
        r = self.report
        silent = ", ".join(f"{self.spec.topic_streams()[n].topic} > {self.spec.max_age_of(n) * 1e3:g} ms"
                           for n in self.spec.state_inputs())
        dropped = ", ".join(f"{n:,} {why}" for why, n in r.dropped.items()) or "none"
        messages = sum(s.messages for s in self.sources)
        if len(self.sources) == 1:
            s = self.sources[0]
            lines = [f"converted {s.path} ({s.storage}, {messages:,} messages, content hash {s.content_hash}) "
                     f"-> {self.out}"]
        else:
            lines = [f"converted {len(self.sources)} bags ({messages:,} messages, content hash {self.content_hash}; "
                     f"episodes never joined across bags) -> {self.out}"]
            lines += [f"  {s.path} ({s.storage}, {s.messages:,} messages, content hash {s.content_hash})"
                      for s in self.sources]
        lines += [
            f"  {r.episodes} episode(s) (split where a state input is silent: {silent}), "
            f"{r.ticks:,} ticks every {self.spec.control_period * 1e3:g} ms",
            f"  {r.transitions:,} transitions, {r.timeouts:,} time-outs, 0 terminals (a bag has no terminal signal)",
            f"  ticks dropped: {dropped}",
        ]
        for what, counts, note in (
                ("non-finite samples", r.nonfinite_samples, f"--on-nonfinite {self.options.on_nonfinite}"),
                ("samples sharing a stamp with a different value", r.ambiguous_samples,
                 f"--on-duplicate {self.options.on_duplicate}"),
                ("exact duplicate samples", r.duplicate_samples, "dropped"),
                ("samples stamped before an earlier one", r.reordered_samples, "sorted by stamp"),
                ("held states", r.held_states, "transitions whose next state is the same sample as their state")):
            if counts:
                lines.append(f"  {what}: {', '.join(f'{n:,} {name}' for name, n in counts.items())} ({note})")
        if r.clipped_actions:
            lines.append(f"  {r.clipped_actions:,} commands outside the spec's bounds were clipped to them")
        lines.append(f"  safety margin > 0 (unsafe) on {self.unsafe:,} of {r.transitions:,} transitions "
                     f"({self.unsafe / max(r.transitions, 1):.1%})")
        warning = margin_warning(self.unsafe, r.transitions)
        if warning:
            lines.append(f"  WARNING: {warning}")
        for s in self.sources:
            if s.partial:
                read = "; ".join(f"{t}: {n:,} of {m:,}" for t, (n, m) in s.partial.items())
                lines.append(f"  WARNING: {s.path} is damaged and was read only in part ({read} messages "
                             "its metadata lists; --allow-partial)")
        return "\n".join(lines)


def margin_warning(unsafe: int, transitions: int) -> str | None:
    """Why a margin that never or always flags a state is probably a mistake in the spec."""
    if unsafe == transitions:
        return ("the margin is positive on every transition: every state counts as unsafe, so the safety critic "
                "cannot tell safe from unsafe. Check its sign (l > 0 means unsafe: write -clearance, not clearance)")
    if unsafe == 0:
        return ("the margin is never positive: the data holds no unsafe state, so the safety critic only learns "
                "what the behaviour happened to avoid. Check its sign and offsets, or record some unsafe behaviour")
    return None


def load_spec(config: str | None) -> TaskSpec:
    """The task spec of a config YAML, or the built-in boat spec when none is given."""
    return TaskSpec.load(config) if config else TaskSpec.builtin("boat")


def read_aligned(bags: str | Path | Sequence[str | Path], spec: TaskSpec, options: BagOptions = BagOptions(),
                 progress: bool = True) -> tuple[dict[str, np.ndarray], AlignmentReport, list[BagSource]]:
    """Read and align each bag on its own; their transitions concatenated, reports merged."""
    store = typestore(options.typestore, options.msg)
    paths = bag_paths([bags] if isinstance(bags, (str, Path)) else bags)
    parts, report = [], AlignmentReport()
    sources: list[BagSource] = []
    for path in paths:
        series, source = read_series(path, spec, store, options.allow_partial, progress)
        twin = next((s for s in sources if s.content_hash == source.content_hash), None)
        if twin is not None:
            raise BagError(f"{path} and {twin.path} hold the same recording (content hash {source.content_hash}); "
                           "pass each recording once")
        try:
            arrays, part = build_transitions(spec, series, options.on_nonfinite, options.on_duplicate)
        except AlignmentError as exc:
            raise AlignmentError(f"{path}: {exc}" if len(paths) > 1 else str(exc)) from None
        parts.append(arrays)
        report = report.merge(part)
        sources.append(source)
    arrays = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return arrays, report, sources


def convert(bags: str | Path | Sequence[str | Path], spec: TaskSpec, out: str | Path,
            options: BagOptions = BagOptions(), progress: bool = True) -> Conversion:
    """Read, align, validate and save; the dataset's attributes record spec and sources."""
    arrays, report, sources = read_aligned(bags, spec, options, progress)
    result = Conversion(Path(out), spec, sources, report, options, int((arrays["margins"] > 0).sum()))
    attrs: dict[str, Any] = {
        "task": spec.name,
        "task_spec": spec.to_dict(),
        "observation_fields": spec.observation_names,
        "action_fields": spec.command.names,
        "action_low": list(spec.action_low),
        "action_high": list(spec.action_high),
        "control_period": spec.control_period,
        "max_age": spec.max_age,
        "source": "offline_train.convert (rosbag2)",
        "bag": ", ".join(str(Path(s.path).resolve()) for s in sources),
        "bag_content_hash": result.content_hash,
        "bag_storage": ", ".join(sorted({s.storage for s in sources})),
        "bags": [{**asdict(s), "path": str(Path(s.path).resolve())} for s in sources],
        "typestore": options.typestore,
        "msg_definitions": list(options.msg),
        "alignment": asdict(report),
    }
    data = Dataset(**arrays, attrs=attrs)
    validate(data, attrs["bag"])
    save_dataset(out, data)
    return result

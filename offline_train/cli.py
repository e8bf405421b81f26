"""Command-line pieces that several offline_train commands share, so they read and behave alike."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import yaml

from safefql_core.alignment import DUPLICATE_POLICIES, NONFINITE_POLICIES
from safefql_core.bags import DEFAULT_TYPESTORE, TYPESTORES
from safefql_core.pipeline.convert import BagOptions
from safefql_core.training import RunError


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    """--threads, default 1, for every command that runs torch on the CPU.

    One fixed count, not torch's one-per-core default: the count changes the float
    summation order, and a long contact-rich rollout (or 20k training steps) amplifies
    that into different results on machines with different core counts. More threads do
    pay on the wider Safety Gymnasium networks: `--threads 2` trains Goal's 256-wide
    SafeFQL ~1.5x faster on 2 cores (docs/BENCHMARKS.md, "Training time").
    """
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: a fixed count keeps results identical across machines; "
                        "the 256-wide Safety Gymnasium networks train ~1.5x faster with 2 on 2 cores)")


def set_threads(threads: int) -> None:
    """Apply --threads; refuses counts below one with the flag's name."""
    if threads < 1:
        raise RunError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)


def add_set_argument(p: argparse.ArgumentParser, metavar: str, example: str) -> None:
    """--set KEY=VALUE ...; repeated flags add up (argparse's default would keep only the last)."""
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar=metavar,
                   help=f"override config keys (YAML values), e.g. --set {example}")


def parse_override(item: str) -> tuple[str, Any]:
    """'KEY=VALUE' -> (KEY, VALUE read as YAML, so 3 is an int and [64,64] a list)."""
    key, eq, value = item.partition("=")
    if not eq or not key:
        raise RunError(f"--set expects KEY=VALUE, got '{item}'")
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str):  # YAML 1.1 reads 3e-4 (no dot) as a string; a number is meant
        try:
            return key, float(parsed)
        except ValueError:
            pass
    return key, parsed


def write_json(path: Path | None, doc: dict) -> None:
    """Write a command's JSON result where `prepare_output_file` (safefql_core.pipeline.files)
    checked it could go, and say so."""
    if path:
        path.write_text(json.dumps(doc, indent=2))
        print(f"wrote {path}")


def add_allow_partial_argument(p: argparse.ArgumentParser) -> None:
    """--allow-partial, for the commands that read a run `fit` may not have finished."""
    p.add_argument("--allow-partial", action="store_true",
                   help="use a run whose training has not finished (fit still running, or stopped) at its "
                        "last checkpoint; without it such a run is refused")


def add_decision_arguments(p: argparse.ArgumentParser) -> None:
    """--proposals/--candidates/--noise of `calibrate` and `fit --bag`: the decision to calibrate,
    and so to deploy (export writes the calibrated one into the bundle); unset ones are the
    task's defaults (docs/DESIGN.md, "One decision")."""
    p.add_argument("--proposals", type=at_least(1), help="actor noises per tick of the decision to calibrate "
                   "(default 1; docs/DESIGN.md, \"Proposals\")")
    p.add_argument("--candidates", type=at_least(0), help="extra actor samples it scores on intervention (default 8)")
    p.add_argument("--noise", choices=["zero", "sample"], help="its actor noise (default zero)")
    # A robot of your own: what "stop" means in [-1, 1] command units is the robot's (zero only
    # where the bounds are symmetric), and the fallbacks worth scoring are too.
    p.add_argument("--stop-action", type=float, nargs="+", metavar="A",
                   help="the action sent when a state cannot be trusted, in [-1, 1] units, one value per "
                        "command field (default: all zeros)")
    p.add_argument("--fallback-actions", type=float, nargs="*", metavar="A",
                   help="fallback candidates scored on intervention, flat, one action after the other in "
                        "[-1, 1] units; none given: no fallbacks (default: the task's, none for a robot of your own)")


def decision_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The decision flags as `calibrate_run`'s decision_changes (None: the task's default)."""
    return {"proposals": args.proposals, "candidates": args.candidates, "noise": args.noise,
            "stop_action": args.stop_action, "fallback_actions": args.fallback_actions}


def at_least(low: int):
    """An argparse `type`: an integer >= low, refused by argparse with the flag's name
    (a negative seed or zero episodes would otherwise fail deep inside, or silently)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def add_bag_arguments(p: argparse.ArgumentParser) -> None:
    """The conversion options, shared by `convert`, `fit --bag` and `replay`."""
    p.add_argument("--typestore", default=DEFAULT_TYPESTORE, choices=sorted(TYPESTORES),
                   help="message definitions for bags that do not store their own (default: %(default)s)")
    p.add_argument("--msg", action="append", default=[], metavar="PATH",
                   help="custom message definitions for bags that store none (Humble and older): a "
                        "<package>/msg/<Name>.msg file or a folder of them; repeatable")
    p.add_argument("--on-nonfinite", default="refuse", choices=NONFINITE_POLICIES,
                   help="NaN/inf in a used field: refuse (default) or drop the ticks that use it")
    p.add_argument("--on-duplicate", default="refuse", choices=DUPLICATE_POLICIES,
                   help="samples of one topic sharing a stamp with different values: refuse (default) or "
                        "drop the ticks that use them")
    p.add_argument("--allow-partial", action="store_true",
                   help="convert a damaged bag's readable messages instead of refusing it (the summary warns)")


def bag_options(args: argparse.Namespace) -> BagOptions:
    """The options `add_bag_arguments` declared, as the pipeline's conversion takes them."""
    return BagOptions(args.typestore, tuple(args.msg), args.on_nonfinite, args.on_duplicate, args.allow_partial)

"""`python -m offline_train.bench latency`: batch-1 decision latency, all variants in one run.

Variants are timed in interleaved rounds (a slice of calls each, round-robin), so drift in
machine load hits every variant alike; ratios measured in one run are what we report.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable

import numpy as np
import torch

from offline_train.cli import add_threads_argument, prepare_output_file, set_threads
from safefql_core.bundle import BundleError, load_bundle
from safefql_core.runtime import Runtime, RuntimeConfig
from safefql_core.training import RunError


def teacher_decision(bundle, threads: int) -> Callable[[np.ndarray], object]:
    """What SafeFQL would cost without distillation: K-step flow teacher + safety check."""
    from safefql_core.agent import euler_sample
    from safefql_core.runtime import TorchGraphs
    graphs = TorchGraphs(bundle, threads)
    safety, teacher = graphs.modules["safety"], graphs.learner.teacher
    steps = bundle.meta["training"]["config"]["flow_steps"]

    def decide(obs: np.ndarray):
        with torch.no_grad():
            o = torch.from_numpy(obs.astype(np.float32)).view(1, -1)
            a = euler_sample(teacher, safety.normalizer(o), torch.zeros(1, bundle.act_dim), steps)
            return safety(o, a)
    return decide


def observations(bundle, n: int, seed: int) -> np.ndarray:
    """Typical inputs: the task's evaluation states for the boat, else normalisation samples."""
    if bundle.meta["task"].get("name") == "boat":
        from safefql_core.envs import boat
        return boat.evaluation_states()[:n]
    norm = bundle.meta["observation_normalisation"]
    return np.random.default_rng(seed).normal(norm["mean"], norm["std"], (n, bundle.obs_dim))


def time_variants(variants: dict[str, Callable], obs: np.ndarray, calls: int, rounds: int,
                  warmup: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(latencies in µs, decision modes or None) per variant, interleaved in rounds."""
    per_round = max(1, calls // rounds)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    modes: dict[str, list[str]] = {name: [] for name in variants}
    for fn in variants.values():
        for i in range(warmup):
            fn(obs[i % len(obs)])
    for r in range(rounds):
        for name, fn in variants.items():
            out = samples[name]
            for i in range(per_round):
                x = obs[(r * per_round + i) % len(obs)]
                t = time.perf_counter_ns()
                decision = fn(x)
                out.append((time.perf_counter_ns() - t) / 1e3)
                modes[name].append(getattr(getattr(decision, "mode", None), "value", ""))
    return ({k: np.asarray(v) for k, v in samples.items()}, {k: np.asarray(v) for k, v in modes.items()})


def latency(args: argparse.Namespace) -> dict:
    set_threads(args.threads)   # checked and applied before any runtime reads the count
    if args.proposals < 1:
        raise RunError(f"--proposals must be at least 1 (1: skip that variant), got {args.proposals}")
    bundle = load_bundle(args.bundle)
    if bundle.algo != "safefql":
        raise BundleError(f"--bundle must be a safefql bundle (got {bundle.algo}); pass FISOR as --baseline")
    cfg = lambda backend, proposals=1: RuntimeConfig(  # noqa: E731
        backend=backend, threads=args.threads, seed=args.seed, proposals=proposals)
    safefql = Runtime(bundle, cfg("onnxruntime"))
    variants = {
        "safefql_ort": safefql.decide,
        "safefql_torch": Runtime(bundle, cfg("torch")).decide,
        "teacher": teacher_decision(bundle, args.threads),
    }
    if args.proposals > 1:
        variants["safefql_proposals"] = Runtime(bundle, cfg("onnxruntime", args.proposals)).decide
    if args.baseline:
        baseline = load_bundle(args.baseline)
        if baseline.algo != "fisor":
            raise BundleError(f"--baseline must be a fisor bundle (got {baseline.algo})")
        variants["fisor"] = Runtime(baseline, cfg("onnxruntime")).decide
    obs = observations(bundle, 500, args.seed)
    samples, modes = time_variants(variants, obs, args.calls, args.rounds, args.warmup)
    result: dict = {"calls_per_variant": int(len(next(iter(samples.values())))), "threads": args.threads,
                    "threshold": safefql.threshold, "proposals": args.proposals}
    for name, us in samples.items():
        result[f"{name}_median_us"] = round(float(np.median(us)), 2)
        result[f"{name}_p99_us"] = round(float(np.percentile(us, 99)), 2)
        for mode in sorted(set(modes[name]) - {""}):  # the mix of paths behind the median
            picked = us[modes[name] == mode]
            result[f"{name}_{mode.lower()}_fraction"] = round(len(picked) / len(us), 4)
            result[f"{name}_{mode.lower()}_median_us"] = round(float(np.median(picked)), 2)
    if "fisor" in samples:
        result["speedup"] = round(result["fisor_median_us"] / result["safefql_ort_median_us"], 2)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m offline_train.bench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    lat = sub.add_parser("latency", help="batch-1 decision latency, median and p99")
    lat.add_argument("--bundle", required=True, help="SafeFQL bundle")
    lat.add_argument("--baseline", help="FISOR-style bundle to compare against")
    lat.add_argument("--proposals", type=int, default=16,
                     help="also time the decision with this many actor proposals per tick (1: skip)")
    lat.add_argument("--calls", type=int, default=10_000, help="timed calls per variant (>= 10k for p99)")
    lat.add_argument("--rounds", type=int, default=20)
    lat.add_argument("--warmup", type=int, default=500)
    add_threads_argument(lat)
    lat.add_argument("--seed", type=int, default=0)
    lat.add_argument("--json")
    args = p.parse_args(argv)
    try:
        json_path = prepare_output_file(args.json, "--json")
        result = latency(args)
    except (BundleError, RunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name in ("safefql_ort", "safefql_proposals", "safefql_torch", "teacher", "fisor"):
        if f"{name}_median_us" in result:
            paths = ", ".join(f"{m} {result[f'{name}_{m}_fraction']:.0%} at {result[f'{name}_{m}_median_us']:.1f} us"
                              for m in ("nominal", "intervene", "unsafe") if f"{name}_{m}_fraction" in result)
            print(f"{name:>17}: median {result[f'{name}_median_us']:8.1f} us   p99 {result[f'{name}_p99_us']:8.1f} us"
                  + (f"   ({paths})" if paths else ""))
    if "speedup" in result:
        print(f"speedup (FISOR-style median / SafeFQL ORT median): {result['speedup']:.1f}x")
    if json_path:
        json_path.write_text(json.dumps(result, indent=2))
        print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

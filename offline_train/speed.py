"""`python -m offline_train.speed`: how fast the code runs (not how well it controls: that is
`benchmark`).

    speed latency --bundle B   batch-1 decision latency, all variants in one run. Variants are
                               timed in interleaved rounds (a slice of calls each, round-robin),
                               so drift in machine load hits every variant alike; ratios
                               measured in one run are what we report.
    speed train [--sizes S]    training throughput: ms per update, steps/s and the phase split
                               for a config (safefql_core.throughput), optionally on CUDA with
                               and without the update captured as a CUDA graph.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

import numpy as np
import torch

from offline_train.cli import (
    add_set_argument,
    add_threads_argument,
    parse_override,
    set_threads,
    write_json,
)
from safefql_core.bundle import BundleError, load_bundle
from safefql_core.pipeline.files import prepare_output_file
from safefql_core.pipeline.latency import observations, time_variants
from safefql_core.runtime import Runtime, RuntimeConfig
from safefql_core.training import ALGOS, RunError

# Network sizes to time at, on top of the task's config: the boat's own; the reference
# code's (critics 2x256, teacher and actor 4x512, batch 1024); FQL's paper defaults (every
# critic 4x512 with layer norm, as FQL's `value_hidden_dims` and `layer_norm`, batch 256).
SIZES: dict[str, dict] = {
    "boat": {},
    "large": {"critic_hidden": [256, 256], "flow_hidden": [512] * 4, "batch_size": 1024},
    "paper": {"critic_hidden": [512] * 4, "critic_layer_norm": True, "flow_hidden": [512] * 4,
              "batch_size": 256},
}


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


def latency(args: argparse.Namespace) -> dict:
    set_threads(args.threads)   # checked and applied before any runtime reads the count
    if args.proposals < 1:
        raise RunError(f"--proposals must be at least 1 (1: skip that variant), got {args.proposals}")
    bundle = load_bundle(args.bundle)
    if bundle.algo != "safefql":
        raise BundleError(f"--bundle must be a safefql bundle (got {bundle.algo}); pass FISOR as --baseline")
    cfg = lambda backend, proposals=None, of=bundle: RuntimeConfig(  # noqa: E731  (a timed variant: an override)
        backend=backend, threads=args.threads, seed=args.seed, override_decision=True,
        decision=of.decision.with_changes(proposals=proposals))
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
        variants["fisor"] = Runtime(baseline, cfg("onnxruntime", of=baseline)).decide
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


def train_speed(args: argparse.Namespace) -> dict:
    """Time the learner's update at each of --sizes on the task's data (or a generated boat
    dataset), eager and/or replayed as a CUDA graph."""
    from safefql_core import throughput
    from safefql_core.pipeline.train import load_overrides
    from safefql_core.training import build_learner, resolve_config, resolve_device, seed_everything
    set_threads(args.threads)
    throughput.keep_freed_memory()  # as fit's training loop does
    _, task_overrides = load_overrides(args.config, args.algo, args.task)
    user = dict(parse_override(item) for item in args.set)
    device = resolve_device(args.device)
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.cuda_graph]
    if True in modes and device.type != "cuda":
        raise RunError("--cuda-graph captures the update on a CUDA device; pass --device cuda "
                       "(or --cuda-graph off on a CPU-only machine)")
    data = training_data(args)
    result: dict = {"algo": args.algo, "device": str(device), "threads": args.threads, "torch": torch.__version__,
                    "transitions": len(data), "runs": []}
    for sizes in args.sizes:
        config = resolve_config(args.algo, {**task_overrides, **SIZES[sizes], **user})
        run: dict = {"sizes": sizes, "config": config}
        for graphed in modes:
            seed_everything(args.seed)
            learner = build_learner(args.algo, config, data.obs_dim, data.act_dim, data.observations.mean(axis=0),
                                    data.observations.std(axis=0)).to(device)
            batches = throughput.batch_source(learner, data, device, args.seed)
            update = None
            if graphed:
                from safefql_core.cuda_graph import GraphedUpdate
                update = GraphedUpdate(learner)
            run["cuda_graph" if graphed else "eager"] = throughput.measure(
                learner, batches, args.chunks, args.per_chunk, args.warmup, 0 if graphed else args.profile_steps,
                update)
        result["runs"].append(run)
    return result


def training_data(args: argparse.Namespace):
    """--data, or a boat dataset generated in memory (timing does not depend on its values)."""
    from safefql_core.data import Dataset, load_dataset
    if args.data:
        return load_dataset(args.data)
    from safefql_core.envs import boat_behaviour
    arrays = boat_behaviour.collect(args.episodes, seed=args.seed, progress=False)
    arrays.pop("family")
    return Dataset(**arrays, attrs={"task": "boat"})


def print_train(result: dict) -> None:
    for run in result["runs"]:
        for mode in ("eager", "cuda_graph"):
            if mode not in run:
                continue
            r = run[mode]
            print(f"{result['algo']} at {run['sizes']} sizes on {result['device']} ({mode}, "
                  f"{result['threads']} thread(s)): {r['ms_per_update']:.2f} ms/update, "
                  f"{r['steps_per_s']:.0f} steps/s, CPU {r['cpu_ms_per_update']:.2f} ms/update "
                  f"(chunks spread {r['chunk_spread']:.0%})")
            if "phases" in r:
                print("  phases: " + ", ".join(f"{k} {v:.0%}" for k, v in r["phases"].items()))
        if "eager" in run and "cuda_graph" in run:
            print(f"  CUDA graph speed-up at {run['sizes']} sizes: "
                  f"{run['eager']['ms_per_update'] / run['cuda_graph']['ms_per_update']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m offline_train.speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
    tr = sub.add_parser("train", help="training throughput: ms per update, steps/s, phase split")
    tr.add_argument("--data", help="dataset HDF5 (default: a boat dataset generated in memory)")
    tr.add_argument("--episodes", type=int, default=12, help="episodes of the generated boat dataset")
    tr.add_argument("--config", help="task YAML (as fit's --config)")
    tr.add_argument("--task", help="as fit's --task")
    tr.add_argument("--algo", default="safefql", choices=sorted(ALGOS))
    tr.add_argument("--sizes", nargs="+", default=["boat"], choices=sorted(SIZES),
                    help="network sizes, one run each: the config's (boat), the reference code's (large), "
                         "FQL's paper's (paper)")
    add_set_argument(tr, "KEY=VALUE", "batch_size=512")
    tr.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    tr.add_argument("--cuda-graph", choices=("off", "on", "both"), default="off",
                    help="time the update captured as one CUDA graph (on), eager (off), or both (CUDA only)")
    tr.add_argument("--chunks", type=int, default=10, help="timed chunks; the median chunk is reported")
    tr.add_argument("--per-chunk", type=int, default=50, help="updates per chunk")
    tr.add_argument("--warmup", type=int, default=20)
    tr.add_argument("--profile-steps", type=int, default=20,
                    help="updates profiled for the phase split (0: skip; not with a CUDA graph)")
    add_threads_argument(tr)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--json")
    args = p.parse_args(argv)
    if args.command == "train":
        try:
            json_path = prepare_output_file(args.json, "--json")
            result = train_speed(args)
        except (RunError, ValueError) as exc:  # DatasetError is a ValueError
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print_train(result)
        write_json(json_path, result)
        return 0
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
    write_json(json_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

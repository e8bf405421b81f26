"""Time FQL's own JAX `update()` (seohongpark/fql, agents/fql.py, unmodified) on one CPU thread.

The other half of the side-by-side in docs/BENCHMARKS.md ("Training throughput"); not part of
the package and not imported by it. Run it in a scratch venv, never the project's:

    python3 -m venv /tmp/jaxvenv && /tmp/jaxvenv/bin/pip install jax flax optax ml_collections
    git clone https://github.com/seohongpark/fql /tmp/fql     # commit 719d044 measured
    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
      /tmp/jaxvenv/bin/python docs/notebook/fql_update_timing.py --fql /tmp/fql --sizes boat --json fql.json

It prints and writes the median chunk's ms per update, wall clock and this process's CPU time,
as `python -m offline_train.speed train` does for safefql (same chunking). FQL's
utils/networks.py imports distrax for its Gaussian actor, which FQL's agent does not use; a
stub module stands in for it so that tensorflow-probability need not be installed. Batches
are drawn beforehand (FQL's update gets no sampling cost; safefql's timing includes its own).
"""
import argparse
import json
import statistics
import sys
import time
import types

import numpy as np

# Sizes as offline_train/speed.py's SIZES, in FQL's config keys.
SIZES = {
    "boat": dict(value_hidden_dims=(128, 128), actor_hidden_dims=(128, 128, 128), layer_norm=False,
                 batch_size=256),
    "large": dict(value_hidden_dims=(256, 256), actor_hidden_dims=(512,) * 4, layer_norm=False, batch_size=1024),
    "paper": dict(value_hidden_dims=(512,) * 4, actor_hidden_dims=(512,) * 4, layer_norm=True, batch_size=256),
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--fql", required=True, help="checkout of github.com/seohongpark/fql")
    p.add_argument("--sizes", default="boat", choices=sorted(SIZES))
    p.add_argument("--obs-dim", type=int, default=2)
    p.add_argument("--act-dim", type=int, default=2)
    p.add_argument("--chunks", type=int, default=4)
    p.add_argument("--per-chunk", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--json")
    args = p.parse_args()
    distrax = types.ModuleType("distrax")  # see module doc
    distrax.Transformed = object  # a base class FQL's unused Gaussian-actor helper names
    sys.modules["distrax"] = distrax
    sys.path.insert(0, args.fql)
    import jax
    from agents.fql import FQLAgent, get_config

    config = get_config()
    config.update(SIZES[args.sizes])
    rng = np.random.default_rng(0)
    n = config["batch_size"]
    batches = [{
        "observations": rng.normal(size=(n, args.obs_dim)).astype(np.float32),
        "next_observations": rng.normal(size=(n, args.obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, args.act_dim)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "masks": np.ones(n, np.float32),
    } for _ in range(8)]
    batches = [jax.device_put(b) for b in batches]
    agent = FQLAgent.create(0, batches[0]["observations"], batches[0]["actions"], config)

    step = 0

    def chunk(count: int) -> None:
        nonlocal agent, step
        for _ in range(count):
            agent, info = agent.update(batches[step % len(batches)])
            step += 1
        jax.block_until_ready(agent.network.params)

    chunk(args.warmup)
    wall, cpu = [], []
    for _ in range(args.chunks):
        t, c = time.perf_counter(), time.process_time()
        chunk(args.per_chunk)
        wall.append((time.perf_counter() - t) * 1e3 / args.per_chunk)
        cpu.append((time.process_time() - c) * 1e3 / args.per_chunk)
    result = {"sizes": args.sizes, "jax": jax.__version__, "ms_per_update": round(statistics.median(wall), 3),
              "cpu_ms_per_update": round(statistics.median(cpu), 3), "chunk_ms": [round(x, 3) for x in wall]}
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

"""safefql's update before and after issue 31, in one process, alternating chunks.

Another process on a shared machine slows both alike only when they alternate within one
window; two versions of the package in one process alternate at the finest grain. The
earlier version is imported under another name from a copy of its tree:

    mkdir -p /tmp/before && git archive 70627a7 safefql_core | tar -x -C /tmp/before
    mv /tmp/before/safefql_core /tmp/before/safefql_base
    grep -rl safefql_core /tmp/before/safefql_base | xargs sed -i 's/safefql_core/safefql_base/g'
    OMP_NUM_THREADS=1 .venv/bin/python docs/notebook/update_before_after.py /tmp/before boat 15 20

Prints the median over rounds of the CPU time (this process's) and wall time per update.
Sizes as `offline_train.speed`'s SIZES. Not part of the package.
"""
import statistics
import sys
import time

import torch

from offline_train.speed import SIZES
from safefql_core import throughput
from safefql_core import training as now_training
from safefql_core.data import Dataset
from safefql_core.envs import boat_behaviour


def main() -> None:
    base_tree, sizes, rounds, per = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sys.path.insert(0, base_tree)
    import safefql_base.training as before_training
    torch.set_num_threads(1)
    arrays = boat_behaviour.collect(12, seed=0, progress=False)
    arrays.pop("family")
    data = Dataset(**arrays, attrs={"task": "boat"})
    setups = {}
    for name, module in (("before", before_training), ("now", now_training)):
        config = module.resolve_config("safefql", SIZES[sizes])
        module.seed_everything(0)
        learner = module.build_learner("safefql", config, 2, 2, data.observations.mean(0), data.observations.std(0))
        setups[name] = (learner, throughput.batch_source(learner, data, torch.device("cpu"), 0))

    def chunk(name: str, count: int) -> tuple[float, float]:
        learner, batches = setups[name]
        c, t = time.process_time(), time.perf_counter()
        for step in range(count):
            learner.update(batches.sample(learner.cfg.batch_size), step)
        return (time.process_time() - c) * 1e3 / count, (time.perf_counter() - t) * 1e3 / count

    for name in setups:
        chunk(name, 5)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in setups}
    for _ in range(rounds):
        for name in setups:
            times[name].append(chunk(name, per))
    cpu = {k: statistics.median(x[0] for x in v) for k, v in times.items()}
    wall = {k: statistics.median(x[1] for x in v) for k, v in times.items()}
    print(f"{sizes}: CPU ms/update before {cpu['before']:.2f} now {cpu['now']:.2f} "
          f"(now/before {cpu['now'] / cpu['before']:.3f}); wall before {wall['before']:.2f} now {wall['now']:.2f}; "
          f"{rounds} rounds x {per} updates")


if __name__ == "__main__":
    main()

#!/bin/bash
# safefql before (optional: a checkout of 70627a7 at $BEFORE), safefql now (this tree) and FQL's
# JAX update, one after the other, ROUNDS times, one thread each (docs/notebook/training-throughput.md).
# usage: [BEFORE=/tmp/before-tree] FQL=/tmp/fql JAXPY=/tmp/jaxvenv/bin/python \
#        taskset -c 1 docs/notebook/fql_side_by_side.sh ROUNDS SIZES CHUNKS PER_CHUNK WARMUP
# (BEFORE needs this tree's offline_train/speed.py and safefql_core/throughput.py copied in.)
# taskset pins every process to one core: unpinned, XLA runs a second thread despite its flags.
R=$1; S=$2; C=$3; P=$4; W=$5
HERE=$(cd "$(dirname "$0")/../.." && pwd); PY=$HERE/.venv/bin/python; OUT=${OUT:-/tmp/side}; mkdir -p $OUT
TREES="$BEFORE $HERE"
for r in $(seq $R); do
  for T in $TREES; do
    (cd $T && OMP_NUM_THREADS=1 PYTHONPATH=$T $PY -m offline_train.speed train --sizes $S --threads 1 --chunks $C \
       --per-chunk $P --warmup $W --profile-steps 0 --json $OUT/${S}_$(basename $T)_$r.json > /dev/null) || exit 1
  done
  XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" $JAXPY $HERE/docs/notebook/fql_update_timing.py \
    --fql $FQL --sizes $S --chunks $C --per-chunk $P --warmup $W --json $OUT/${S}_fql_$r.json > /dev/null 2>&1 || exit 1
  $PY -c "
import json
cpu = lambda t: json.load(open('$OUT/${S}_%s_$r.json' % t))['runs'][0]['eager']['cpu_ms_per_update']
f = json.load(open('$OUT/${S}_fql_$r.json'))['cpu_ms_per_update']
b = ' before %.2f' % cpu('$(basename "$BEFORE")') if '$BEFORE' else ''
n = cpu('$(basename $HERE)')
print('round $r $S: CPU ms/update%s now %.2f FQL %.2f, now/FQL %.2f, load %s' % (b, n, f, n / f, open('/proc/loadavg').read().split()[0]))"
done

#!/usr/bin/env bash
# bench/merge-bench for two builds in alternating pairs (order flipped each pair), ours only, --fsync off.
# Usage: [LAYERS=22] [OLDBIN=/tmp/tswitch-main] bench/merge-bench-pairs.sh NEWBIN LOG [PAIRS=5]; table: bench/merge-bench-pairs-table.py LOG
NEWBIN=$1; LOG=$2; PAIRS=${3:-5}
cd "$(dirname "$0")/.."
for i in $(seq 1 $PAIRS); do
  if [ $((i % 2)) -eq 1 ]; then order="old new"; else order="new old"; fi
  for which in $order; do
    bin=${OLDBIN:-/tmp/tswitch-main}; [ $which = new ] && bin=$NEWBIN
    echo "== pair $i $which $(date -u +%H:%M:%S) $(uptime)" >> $LOG
    flock /tmp/bench.lock python3 bench/merge-bench --layers ${LAYERS:-6} --methods ties,breadcrumbs,task_arithmetic \
      --skip-mergekit --fsync off --tswitch $bin >> $LOG 2>&1
    echo "== after $(uptime)" >> $LOG
  done
done

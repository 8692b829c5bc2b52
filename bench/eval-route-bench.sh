#!/usr/bin/env bash
# Per-example against hard-batch Auto-Switch in `tswitch eval` (docs/bench-mixed.md), builds alternating:
# per round and build, the 8 tasks with the shipped packs and the paper's k-NN query set, wall time per run.
# BINS="old new" names binaries /tmp/tswitch-NAME (old: /tmp/tswitch-main); ROUNDS (default 3); ROUTER.
# Run under `flock /tmp/bench.lock`; summarize with `python3 bench/eval-route-bench-summary.py LOG`.
set -u
cd "$(dirname "$0")/.."
BASE=$(scripts/model-path)
for round in $(seq 1 ${ROUNDS:-3}); do
  for b in ${BINS:-old new}; do
    bin=/tmp/tswitch-$b; [ $b = old ] && bin=/tmp/tswitch-main
    for m in hard-batch per-example; do
      l0=$(cut -d' ' -f1 /proc/loadavg)
      s0=$(date +%s.%N)
      $bin eval $BASE --head data/heads --data data/tasks --pack packs/*.tsw --json \
           --auto-switch ${ROUTER:-packs/queries.safetensors} --route-mode $m > /tmp/eb-$b-$m.json 2>/dev/null
      t=$(python3 -c "print(round($(date +%s.%N)-$s0,2))")
      acc=$(python3 -c "import json; print(round(100*json.load(open('/tmp/eb-$b-$m.json'))['mean_accuracy'],2))")
      echo "$(date -u +%H:%M:%S) round $round $b $m ${t}s acc $acc load $l0"
    done
  done
done

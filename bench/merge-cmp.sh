#!/usr/bin/env bash
# Merges each config with two builds (OLD, NEW) on the 0.4 B bench/merge-bench set and cmp's every output shard:
# a speed change to the merge methods must leave their output bit-identical.
# Usage: OLD=/tmp/tswitch-main NEW=.build/release/tswitch bench/merge-cmp.sh   (after bench/merge-bench --layers 6)
set -u
cd "$(dirname "$0")/.."
F=${SET:-$PWD/bench/out/merge/llama-6x2048-32000}
OLD=${OLD:-/tmp/tswitch-main}
NEW=${NEW:-.build/release/tswitch}
W=$(mktemp -d); C=$W/cfg; mkdir -p $C
mk() { # name method params
  { echo "merge_method: $2"; echo "base_model: $F/base"; echo "models:"
    for m in ft1 ft2 ft3; do echo "  - model: $F/$m"; echo "    parameters: $3"; done
    echo "dtype: bfloat16"; } > $C/$1.yml; }
mk ties ties "{weight: 1.0, density: 0.3}"
mk ties_mixed ties "{weight: 0.7, density: 0.2}"
mk breadcrumbs breadcrumbs "{weight: 1.0, density: 0.3}"
mk breadcrumbs_ties breadcrumbs_ties "{weight: 1.0, density: 0.9, gamma: 0.05}"
mk dare_ties dare_ties "{weight: 1.0, density: 0.3}"
mk task_arithmetic task_arithmetic "{weight: 1.0}"
fail=0
for cfg in ties ties_mixed breadcrumbs breadcrumbs_ties dare_ties task_arithmetic; do
  rm -rf $W/o-old $W/o-new
  $OLD merge $C/$cfg.yml $W/o-old --no-fsync >/dev/null 2>&1 || { echo "$cfg: old failed"; fail=1; continue; }
  $NEW merge $C/$cfg.yml $W/o-new --no-fsync >/dev/null 2>&1 || { echo "$cfg: new failed"; fail=1; continue; }
  for f in $W/o-old/*.safetensors; do
    if cmp -s "$f" $W/o-new/$(basename $f); then echo "$cfg $(basename $f): identical"; else echo "$cfg $(basename $f): DIFFER"; fail=1; fi
  done
done
rm -rf "$W"
exit $fail

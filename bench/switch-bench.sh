#!/usr/bin/env bash
# Hot-switching benchmark (issue 4): time to switch a resident all-MiniLM-L6-v2 from task A to task B, next to the
# memory-bandwidth floor and to loading the full fine-tune from disk (ours: Swift mapped read; peer: Python
# safetensors + torch), then the same on a generated ~1B-parameter model. Each switch is timed with the scatter
# loop (before), the tiled sweep and the automatic per-tensor rule (after), in alternating rounds.
#
#   bench/switch-bench.sh [ZOO_TASK_A] [ZOO_TASK_B] [--no-1b]
# Needs zoo/<task>/ fine-tunes (scripts/zoo/train_zoo.py) or any two fine-tune folders as A and B.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
A="${1:-zoo/code-lang}"
B="${2:-zoo/lang-id}"
BASE="$(scripts/model-path)"
TS="${TSWITCH_BIN:-.build-switch-rel/release/tswitch}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
[ -x "$TS" ] || swift build -c release --scratch-path .build-switch-rel --product tswitch
echo "== packs (drop 0.9)"
"$TS" pack "$BASE" "$A" -o "$OUT/a.tsw" --drop 0.9
"$TS" pack "$BASE" "$B" -o "$OUT/b.tsw" --drop 0.9
( cd bench/switch-bench && swift build -c release --scratch-path "$ROOT/.build-switch-bench" 2>&1 | tail -1 )
BIN="$ROOT/.build-switch-bench/release/SwitchBench"
echo "== ours: hot switch on all-MiniLM-L6-v2"
"$BIN" real "$BASE" "$OUT/a.tsw" "$OUT/b.tsw" "$B"
echo "== peer: load the full fine-tune B with safetensors/torch (warm cache, 1 thread)"
OMP_NUM_THREADS=1 python3 - "$B" <<'PY'
import sys, time, statistics
import torch
from safetensors.torch import load_file
torch.set_num_threads(1)
ts = []
for _ in range(5):
    t = time.perf_counter(); sd = load_file(sys.argv[1] + "/model.safetensors"); ts.append(time.perf_counter() - t)
print(f"  safetensors.torch.load_file (median of 5)       {statistics.median(ts)*1000:10.3f} ms")
from transformers import AutoModel
ts = []
for _ in range(3):
    t = time.perf_counter(); m = AutoModel.from_pretrained(sys.argv[1]); ts.append(time.perf_counter() - t)
print(f"  transformers AutoModel.from_pretrained (median) {statistics.median(ts)*1000:10.3f} ms")
PY
if [ "${3:-}" != "--no-1b" ]; then
  echo "== ours: generated 1.0B-parameter model, random masks at density 0.1 (T-Switch at drop 0.9)"
  "$BIN" synthetic 1000000000 0.1 --repeat 5
fi

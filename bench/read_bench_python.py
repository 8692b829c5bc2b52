#!/usr/bin/env python3
"""Python side of bench/read-bench: safetensors.safe_open + torch .float() on every tensor of a model folder.
Usage: read_bench_python.py MODEL [PASSES] [THREADS]. Prints one JSON line with the best pass."""
import json
import pathlib
import sys
import time

import torch
from safetensors import safe_open

model = pathlib.Path(sys.argv[1])
passes = int(sys.argv[2]) if len(sys.argv) > 2 else 3
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
files = sorted(model.glob("*.safetensors"))
times, total, checksum = [], 0, 0.0
for p in range(passes + 1):
    start = time.perf_counter()
    nbytes = 0
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                t = st.get_tensor(k)
                nbytes += t.numel() * t.element_size()
                x = t.float()
                checksum += float(x.view(-1)[x.numel() // 2]) if x.numel() else 0.0
                del t, x
    if p > 0:
        times.append(time.perf_counter() - start)
    total = nbytes
best = min(times)
print(json.dumps({"bytes": total, "best_s": round(best, 4), "median_s": round(sorted(times)[len(times) // 2], 4),
                  "gbps_in": round(total / best / 1e9, 3), "threads": torch.get_num_threads(), "torch": torch.__version__,
                  "checksum": checksum}))

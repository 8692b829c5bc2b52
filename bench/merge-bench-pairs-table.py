#!/usr/bin/env python3
"""Table, medians and per-pair ratios of a bench/merge-bench-pairs.sh log (markdown)."""
import json, re, sys, statistics
log = open(sys.argv[1]).read().splitlines()
rows = []; cur = None
for line in log:
    m = re.match(r"== pair (\d+) (\w+) (\S+)\s+.*load average: ([\d.]+)", line)
    if m: cur = {"pair": int(m[1]), "build": m[2], "t": m[3][:5], "load": m[4]}; rows.append(cur); continue
    m = re.match(r"memory bandwidth \(memcpy, 1 thread\): ([\d.]+) GB/s", line)
    if m and cur: cur["bw"] = float(m[1]); continue
    if line.startswith("{") and cur:
        d = json.loads(line); cur[d["method"]] = d["tswitch_nofsync_s"]; cur["floor"] = d["floor_s"]
        if "pc_floor_s" in d: cur.setdefault("pc", {})[d["method"]] = d["pc_floor_s"]
    m = re.match(r"== after .*load average: ([\d.]+)", line)
    if m and cur: cur["after"] = m[1]
pcs = [r["pc"][m] for r in rows for m in r.get("pc", {})]
if pcs: print(f"page-cache floor (max of mmap-read and fresh-file write, per method and run): {min(pcs):.3f}-{max(pcs):.3f} s")
print("| pair (UTC), load before/after | build | memcpy | floor | TIES | ÷ floor | breadcrumbs | ÷ floor | task arithmetic | ÷ floor |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    if "task_arithmetic" not in r: continue
    f = r["floor"]
    print(f"| {r['pair']} ({r['t']}), {r['load']}/{r.get('after','?')} | {r['build']} | {r['bw']:.1f} GB/s | {f:.3f} s | "
          + " | ".join(f"{r[m]:.2f} s | {r[m]/f:.1f}×" for m in ["ties", "breadcrumbs", "task_arithmetic"]) + " |")
for b in ["old", "new"]:
    rs = [r for r in rows if r["build"] == b and "task_arithmetic" in r]
    if not rs: continue
    out = [f"{b}: n={len(rs)}"]
    for m in ["ties", "breadcrumbs", "task_arithmetic"]:
        med = statistics.median(r[m] for r in rs); medr = statistics.median(r[m] / r["floor"] for r in rs)
        pc = [r[m] / r["pc"][m] for r in rs if m in r.get("pc", {})]
        out.append(f"{m} median {med:.2f} s ({medr:.1f}× floor" + (f", {statistics.median(pc):.1f}× page-cache floor)" if pc else ")"))
    print("; ".join(out))
pairs = {}
for r in rows:
    if "task_arithmetic" in r: pairs.setdefault(r["pair"], {})[r["build"]] = r
for m in ["ties", "breadcrumbs", "task_arithmetic"]:
    ratios = [p["new"][m] / p["old"][m] for p in pairs.values() if "new" in p and "old" in p]
    if ratios: print(f"{m}: new/old per pair {['%.2f' % x for x in ratios]}, median {statistics.median(ratios):.2f}, new faster in {sum(x < 1 for x in ratios)} of {len(ratios)}")

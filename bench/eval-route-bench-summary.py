#!/usr/bin/env python3
"""Medians and per-round ratios of a bench/eval-route-bench.sh log."""
import re,sys,statistics as st
d={}
for l in open(sys.argv[1]):
    m=re.search(r'round (\d+) (\S+) (\S+) ([\d.]+)s',l)
    if m: d.setdefault((m[2],m[3]),[]).append(float(m[4]))
for k,v in sorted(d.items()): print(k, v, 'median', st.median(v))
for b in sorted({k[0] for k in d}):
    h=d.get((b,'hard-batch')); p=d.get((b,'per-example'))
    if h and p: print(b, 'ratio of medians', round(st.median(p)/st.median(h),3), 'per-round', [round(x/y,2) for x,y in zip(p,h)])

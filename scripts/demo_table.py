#!/usr/bin/env python3
"""Prints the demo's accuracy and storage tables from `tswitch eval --json` outputs (used by scripts/demo).

Usage: demo_table.py RESULTS PACKS BASE               linear-probe heads: packs in PACKS, random-mask packs in
                                                      PACKS/random-mask
       demo_table.py --zero-shot RESULTS PACKS BASE   the zero-shot-head protocol (PACKS = packs/zero-shot, random-mask
                                                      packs in PACKS/random-mask; the query set and router are the
                                                      shared ones in PACKS/..)
"""
import json
import os
import sys

zero_shot = sys.argv[1] == "--zero-shot"
results_dir, packs_dir, base_dir = sys.argv[2:5] if zero_shot else sys.argv[1:4]


def load(name):
    with open(os.path.join(results_dir, name + ".json")) as f:
        return json.load(f)


pre = load("pretrained")
rows = [("pre-trained, zero-shot heads" if zero_shot else "pre-trained + heads", pre),
        ("T-Switch (task known)", load("tswitch")),
        ("Auto-Switch, per example (LDA)", load("auto-example")), ("Auto-Switch, per batch of 64", load("auto-batch")),
        ("random-mask (task known)", load("random")), ("random-mask Auto, batch of 64", load("random-auto-batch"))]
manifest = json.load(open(os.path.join(packs_dir, "manifest.json")))
individual = manifest["individual_accuracy"]
tasks = sorted(pre["tasks"])
shared = os.path.dirname(os.path.abspath(packs_dir)) if zero_shot else packs_dir

pack_bytes = sum(os.path.getsize(os.path.join(packs_dir, t + ".tsw")) for t in tasks)
query_bytes = os.path.getsize(os.path.join(shared, "queries.safetensors"))
router_bytes = os.path.getsize(os.path.join(shared, "router-layers.tsr"))
finetune_bytes = os.path.getsize(os.path.join(base_dir, "model.safetensors")) * len(tasks)

print()
print("zero-shot-head protocol (CLIP's: each class's head row is its description's embedding)" if zero_shot
      else "linear-probe protocol (heads fitted on pre-trained features)")
print(f"{'method':30} " + " ".join(f"{t[:9]:>9}" for t in tasks) + f" {'mean':>7} {'gain':>6}")
ind_mean = sum(individual[t] for t in tasks) / len(tasks)
pre_mean = pre["mean_accuracy"]


def line(name, acc):
    mean = sum(acc[t] for t in tasks) / len(tasks)
    gain = (mean - pre_mean) / (ind_mean - pre_mean) if ind_mean != pre_mean else float("nan")
    print(f"{name:30} " + " ".join(f"{100 * acc[t]:9.1f}" for t in tasks) + f" {100 * mean:7.1f} {100 * gain:5.0f}%")


for name, r in rows:
    line(name, {t: r["tasks"][t]["accuracy"] for t in tasks})
line("individual fine-tunes*", individual)
print()
print(f"storage: T-Switch (the paper's method): {len(tasks)} packs {pack_bytes / 1e6:.2f} MB "
      f"= {100 * pack_bytes / finetune_bytes:.2f} % of {len(tasks)} F32 fine-tunes ({finetune_bytes / 1e6:.0f} MB), "
      f"drop ratio {manifest['drop_ratio']}")
random_dir = os.path.join(packs_dir, "random-mask")
random_manifest = json.load(open(os.path.join(random_dir, "manifest.json")))
random_bytes = sum(os.path.getsize(os.path.join(random_dir, t + ".tsw")) for t in tasks)
print(f"         random-mask (beyond the paper): {len(tasks)} packs {random_bytes / 1e6:.2f} MB "
      f"= {100 * random_bytes / finetune_bytes:.2f} %, drop ratio {random_manifest['drop_ratio']}, "
      f"seed {random_manifest['seed']}, {random_manifest['values']} values")
print(f"         Auto-Switch query set {query_bytes / 1e6:.2f} MB, LDA router on base layers 3-6 {router_bytes / 1e6:.2f} MB (shared); "
      "packs include the classification heads")
print("gain: share of the fine-tuning gain kept, (method - pre-trained) / (individual - pre-trained)")
print("* measured with the same encoder when the packs were made (scripts/make-packs); the fine-tunes are not shipped")

#!/usr/bin/env python3
"""Prints the demo's accuracy and storage table from `tswitch eval --json` outputs (used by scripts/demo)."""
import json
import os
import sys

results_dir, packs_dir, base_dir = sys.argv[1:4]


def load(name):
    with open(os.path.join(results_dir, name + ".json")) as f:
        return json.load(f)


pre = load("pretrained")
rows = [("pre-trained + heads", pre), ("T-Switch (task known)", load("tswitch")),
        ("Auto-Switch, per example", load("auto-example")), ("Auto-Switch, per batch of 64", load("auto-batch")),
        ("random-mask (task known)", load("random")), ("random-mask Auto, batch of 64", load("random-auto-batch"))]
manifest = json.load(open(os.path.join(packs_dir, "manifest.json")))
random_dir = os.path.join(packs_dir, "random-mask")
random_manifest = json.load(open(os.path.join(random_dir, "manifest.json")))
individual = manifest["individual_accuracy"]
tasks = sorted(pre["tasks"])

pack_bytes = sum(os.path.getsize(os.path.join(packs_dir, t + ".tsw")) for t in tasks)
random_bytes = sum(os.path.getsize(os.path.join(random_dir, t + ".tsw")) for t in tasks)
query_bytes = os.path.getsize(os.path.join(packs_dir, "queries.safetensors"))
finetune_bytes = os.path.getsize(os.path.join(base_dir, "model.safetensors")) * len(tasks)

width = max(len(t) for t in tasks)
print()
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
print(f"storage: T-Switch (the paper's method): 8 packs {pack_bytes / 1e6:.2f} MB "
      f"= {100 * pack_bytes / finetune_bytes:.2f} % of 8 F32 fine-tunes ({finetune_bytes / 1e6:.0f} MB), "
      f"drop ratio {manifest['drop_ratio']}")
print(f"         random-mask (beyond the paper): 8 packs {random_bytes / 1e6:.2f} MB "
      f"= {100 * random_bytes / finetune_bytes:.2f} %, drop ratio {random_manifest['drop_ratio']}, "
      f"seed {random_manifest['seed']}, {random_manifest['values']} values")
print(f"         Auto-Switch query set {query_bytes / 1e6:.2f} MB (shared); packs include the classification heads")
print("gain: share of the fine-tuning gain kept, (method - pre-trained) / (individual - pre-trained)")
print("* measured with the same encoder when the packs were made (scripts/make-packs); the fine-tunes are not shipped")

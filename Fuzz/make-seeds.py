#!/usr/bin/env python3
"""Writes the pack and YAML seed corpora (Fuzz/corpus/pack, Fuzz/corpus/yaml) with the real tool.

Packs come from `tswitch pack` on tiny base/fine-tune pairs (numpy + safetensors); YAML seeds are the mergekit
configs of the merge fixtures. Run after a format change: TSWITCH_BIN=.build/debug/tswitch Fuzz/make-seeds.py
"""
import json
import os
import pathlib
import shutil
import subprocess
import tempfile

import numpy as np
from safetensors.numpy import save_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "Fuzz" / "corpus"
BIN = os.environ.get("TSWITCH_BIN", str(ROOT / ".build" / "debug" / "tswitch"))


def model(folder, tensors):
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text('{"model_type": "bert"}\n')


def pack(work, name, shapes, drop, extra=()):
    rng = np.random.default_rng(len(name))
    base = {k: np.asarray(rng.standard_normal(s), dtype=np.float32) for k, s in shapes.items()}
    fine = {k: np.asarray(v + 0.01 * rng.standard_normal(v.shape), dtype=np.float32) for k, v in base.items()}
    model(work / f"{name}-base", base)
    model(work / f"{name}-fine", fine)
    out = OUT / "pack" / f"{name}.tsw"
    out.unlink(missing_ok=True)
    subprocess.run([BIN, "pack", work / f"{name}-base", work / f"{name}-fine", "-o", out, "--drop", str(drop),
                    "--task", name, *extra], check=True, capture_output=True)


def main():
    (OUT / "pack").mkdir(parents=True, exist_ok=True)
    (OUT / "yaml").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as t:
        work = pathlib.Path(t)
        pack(work, "matrix", {"w": (16, 8), "b": (16,), "s": ()}, 0.5)
        pack(work, "sparse", {"emb": (40, 4), "w": (3, 5, 7)}, 0.9)
        save_file({"classifier.weight": np.arange(6, dtype=np.float32).reshape(2, 3)}, str(work / "head.safetensors"))
        (work / "labels.json").write_text(json.dumps(["neg", "pos"]))
        pack(work, "head", {"w": (8, 8)}, 0.7,
             extra=["--head", work / "head.safetensors", "--labels", work / "labels.json"])
        # Random-mask packs (format version 2, RVAL sections): one per value code.
        pack(work, "random-f16", {"w": (16, 8), "b": (16,), "s": ()}, 0.6, extra=["--kind", "random-mask", "--seed", "5"])
        pack(work, "random-int8", {"emb": (40, 4)}, 0.9, extra=["--kind", "random-mask", "--values", "int8"])
        pack(work, "random-f32", {"w": (8, 8)}, 0.7,
             extra=["--kind", "random-mask", "--values", "f32", "--head", work / "head.safetensors",
                    "--labels", work / "labels.json"])
    for f in sorted((ROOT / "Tests" / "MergeEngineTests" / "Fixtures").glob("*.yml")):
        shutil.copy(f, OUT / "yaml" / f.name)
    for f in sorted((OUT / "pack").iterdir()):
        print(f"{f.relative_to(ROOT)}: {f.stat().st_size} bytes")


if __name__ == "__main__":
    main()

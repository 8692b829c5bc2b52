#!/usr/bin/env python3
"""Writes the pack, router and YAML seed corpora (Fuzz/corpus/pack, router, yaml) with the real tool.

Packs come from `tswitch pack` on tiny base/fine-tune pairs (numpy + safetensors); routers from `tswitch route --build
--kind lda` on tiny random per-task features (format version 1) and, on layer features (version 2, META.layers), on
short texts embedded by the tiny RoBERTa of Tests/EvaluationTests/Fixtures (hidden size 32: one layer keeps the seed
under the fuzzer's 16 KB input limit, the Cholesky factor being D² floats), once more with lexical evidence (version 3,
the LEXI section); YAML seeds are the mergekit configs of the merge fixtures. Run after a format change: TSWITCH_BIN=.build/debug/tswitch Fuzz/make-seeds.py
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


def router(work, name, tasks, dimension, rows):
    """An LDA router over `tasks` tasks of `dimension`-dimensional features, `rows` per task around its own mean."""
    rng = np.random.default_rng(dimension * 31 + tasks)
    pairs = []
    for t in range(tasks):
        mean = rng.standard_normal(dimension)
        feats = np.asarray(mean + 0.3 * rng.standard_normal((rows, dimension)), dtype=np.float32)
        f = work / f"{name}-task{t}.safetensors"
        save_file({"features": feats}, str(f))
        pairs.append(f"task{t}={f}")
    out = OUT / "router" / f"{name}.tsr"
    out.unlink(missing_ok=True)
    subprocess.run([BIN, "route", *pairs, "--build", out, "--kind", "lda"], check=True, capture_output=True)


def layered_router(work, name, tasks, rows, layers, extra=()):
    """An LDA router on base layers `layers` of the tiny RoBERTa, fitted on `rows` made-up texts per task."""
    rng = np.random.default_rng(tasks * 7 + rows)
    words = [["alpha", "beta", "gamma", "delta"], ["one", "two", "three", "four"], ["red", "green", "blue", "grey"]]
    pairs = []
    for t in range(tasks):
        f = work / f"{name}-task{t}.jsonl"
        lines = [" ".join(rng.choice(words[t % len(words)], size=5)) + f" {i}" for i in range(rows)]
        f.write_text("".join(json.dumps({"text": line}) + "\n" for line in lines))
        pairs.append(f"task{t}={f}")
    out = OUT / "router" / f"{name}.tsr"
    out.unlink(missing_ok=True)
    base = ROOT / "Tests" / "EvaluationTests" / "Fixtures" / "roberta-tiny"
    subprocess.run([BIN, "route", *pairs, "--build", out, "--kind", "lda", "--base", base, "--layers", layers,
                    *extra], check=True, capture_output=True)


def main():
    (OUT / "pack").mkdir(parents=True, exist_ok=True)
    (OUT / "router").mkdir(parents=True, exist_ok=True)
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
        router(work, "lda-3x8", 3, 8, 12)
        router(work, "lda-2x4", 2, 4, 6)
        router(work, "lda-5x16", 5, 16, 20)
        layered_router(work, "lda-layers-2", 3, 12, "2", extra=["--no-lexical"])
        # Version 3: the same with lexical evidence (LEXI section, META.lexical), knobs fixed so it is always kept.
        layered_router(work, "lda-lexical-2", 3, 12, "2",
                       extra=["--lexical-alpha", "0.1", "--lexical-weight", "4", "--lexical-power", "1"])
    for f in sorted((ROOT / "Tests" / "MergeEngineTests" / "Fixtures").glob("*.yml")):
        shutil.copy(f, OUT / "yaml" / f.name)
    for f in sorted([*(OUT / "pack").iterdir(), *(OUT / "router").iterdir()]):
        print(f"{f.relative_to(ROOT)}: {f.stat().st_size} bytes")


if __name__ == "__main__":
    main()

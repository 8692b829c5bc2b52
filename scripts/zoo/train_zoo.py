#!/usr/bin/env python3
"""Build the task zoo: one linear-probe head and one fine-tuned all-MiniLM-L6-v2 per task.

Protocol (the task-vectors protocol, so every merged encoder is judged with the same fixed head):
  1. features = masked mean pooling of the frozen pre-trained encoder (max 48 tokens);
     a linear head (classes x 384) is fitted on them (full-batch AdamW, fixed step count);
  2. the encoder is fine-tuned with that head frozen: 4 epochs, lr 5e-5, batch 32, max 48 tokens,
     AdamW with weight_decay=0 (rows of the embedding table that never receive a gradient
     stay bit-identical to the base, which keeps task vectors sparse where they should be).

Outputs:
  zoo/<task>/                   Hugging Face folder (model.safetensors F32, config.json, tokenizer files)
  data/heads/<task>/head.safetensors  `weight` (classes x hidden F32), `bias` (classes F32)
  data/heads/<task>/labels.json copy of the task's labels.json
  zoo/summary.json              per-task test accuracy of pretrained+head and fine-tuned+head, timings

Deterministic for a seed on CPU (single thread, deterministic algorithms). Not run in CI.
Usage: HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python3 scripts/zoo/train_zoo.py [--tasks a,b] [--seed 0]
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, BertModel

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"]


def model_path() -> Path:
    out = subprocess.run([str(ROOT / "scripts" / "model-path")], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def read_jsonl(path: Path):
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                texts.append(row["text"])
                labels.append(int(row["label"]))
    return texts, labels


def seed_all(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def mean_pool(hidden, mask):
    """Masked mean over tokens, as sentence-transformers does for this model."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def encode(model, tok, texts, max_len, batch=64):
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i:i + batch], padding=True, truncation=True, max_length=max_len, return_tensors="pt")
            h = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                      token_type_ids=enc["token_type_ids"]).last_hidden_state
            out.append(mean_pool(h, enc["attention_mask"]))
    return torch.cat(out)


def fit_probe(feats, labels, classes, seed, steps=500, lr=1e-2, weight_decay=1e-4):
    """Full-batch logistic regression on frozen features (fixed step count: deterministic)."""
    seed_all(seed)
    head = torch.nn.Linear(feats.shape[1], classes)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    y = torch.tensor(labels)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(feats), y)
        loss.backward()
        opt.step()
    return head


def accuracy(head, feats, labels):
    with torch.no_grad():
        pred = head(feats).argmax(-1)
    return float((pred == torch.tensor(labels)).float().mean())


def train_task(task: str, args, base: Path, tok, log):
    tdir = ROOT / "data" / "tasks" / task
    labels_meta = json.loads((tdir / "labels.json").read_text())
    classes = len(labels_meta["labels"])
    tr_x, tr_y = read_jsonl(tdir / "train.jsonl")
    te_x, te_y = read_jsonl(tdir / "test.jsonl")
    t0 = time.time()

    # 1. linear probe on the frozen pre-trained encoder
    seed_all(args.seed)
    model = BertModel.from_pretrained(str(base), torch_dtype=torch.float32)
    f_tr = encode(model, tok, tr_x, args.max_len)
    f_te = encode(model, tok, te_x, args.max_len)
    head = fit_probe(f_tr, tr_y, classes, args.seed)
    for p in head.parameters():
        p.requires_grad_(False)
    acc_pre = accuracy(head, f_te, te_y)
    acc_probe_train = accuracy(head, f_tr, tr_y)
    t_probe = time.time() - t0
    log(f"[{task}] probe: train acc {acc_probe_train:.4f}, test acc (pretrained+head) {acc_pre:.4f}, {t_probe:.0f}s")

    hdir = ROOT / "data" / "heads" / task
    hdir.mkdir(parents=True, exist_ok=True)
    save_file({"weight": head.weight.detach().contiguous().float(), "bias": head.bias.detach().contiguous().float()},
              str(hdir / "head.safetensors"))
    shutil.copyfile(tdir / "labels.json", hdir / "labels.json")

    # 2. fine-tune the encoder with the head frozen
    seed_all(args.seed)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed)
    n = len(tr_x)
    step = 0
    for epoch in range(args.epochs):
        order = torch.randperm(n, generator=gen).tolist()
        total, seen = 0.0, 0
        for i in range(0, n, args.batch):
            idx = order[i:i + args.batch]
            enc = tok([tr_x[j] for j in idx], padding=True, truncation=True, max_length=args.max_len,
                      return_tensors="pt")
            h = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                      token_type_ids=enc["token_type_ids"]).last_hidden_state
            logits = head(mean_pool(h, enc["attention_mask"]))
            loss = torch.nn.functional.cross_entropy(logits, torch.tensor([tr_y[j] for j in idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
            step += 1
        log(f"[{task}] epoch {epoch + 1}/{args.epochs}: mean loss {total / seen:.4f}, {time.time() - t0:.0f}s")

    f_te_ft = encode(model, tok, te_x, args.max_len)
    acc_ft = accuracy(head, f_te_ft, te_y)
    out = ROOT / "zoo" / task
    tmp = ROOT / "zoo" / f".{task}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(str(tmp), safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (base / name).exists():
            shutil.copyfile(base / name, tmp / name)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    elapsed = time.time() - t0
    log(f"[{task}] fine-tuned+head test acc {acc_ft:.4f} (pretrained+head {acc_pre:.4f}), {elapsed:.0f}s total")
    return {"classes": classes, "train": n, "test": len(te_x), "pretrained_head": acc_pre,
            "finetuned_head": acc_ft, "probe_train": acc_probe_train, "steps": step, "seconds": round(elapsed, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="", help="comma-separated subset (default: all in data/tasks)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resume", action="store_true", help="skip tasks already in zoo/summary.json")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    base = model_path()
    tasks = [t for t in args.tasks.split(",") if t] or sorted(
        p.name for p in (ROOT / "data" / "tasks").iterdir() if (p / "train.jsonl").exists())
    (ROOT / "zoo").mkdir(exist_ok=True)
    summary_path = ROOT / "zoo" / "summary.json"
    summary = json.loads(summary_path.read_text()) if args.resume and summary_path.exists() else {}
    summary.setdefault("tasks", {})
    summary["protocol"] = {"base": "sentence-transformers/all-MiniLM-L6-v2", "epochs": args.epochs, "lr": args.lr,
                           "batch": args.batch, "max_length": args.max_len, "optimizer": "AdamW weight_decay=0",
                           "seed": args.seed, "threads": args.threads, "torch": torch.__version__,
                           "pooling": "masked mean", "head": "linear probe on frozen pre-trained features, frozen"}

    def log(msg):
        print(time.strftime("%H:%M:%S"), msg, flush=True)

    tok = AutoTokenizer.from_pretrained(str(base))
    start = time.time()
    for task in tasks:
        if args.resume and task in summary["tasks"] and (ROOT / "zoo" / task / "model.safetensors").exists():
            log(f"[{task}] already done, skipped")
            continue
        summary["tasks"][task] = train_task(task, args, base, tok, log)
        done = summary["tasks"]
        summary["mean"] = {k: sum(v[k] for v in done.values()) / len(done) for k in ("pretrained_head", "finetuned_head")}
        summary["seconds_total"] = round(sum(v["seconds"] for v in done.values()), 1)
        tmp = summary_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary, indent=1) + "\n")
        tmp.rename(summary_path)
    log(f"zoo done: {len(tasks)} tasks in {time.time() - start:.0f}s ({(time.time() - start) / 60:.1f} min); "
        f"mean pretrained+head {summary['mean']['pretrained_head']:.4f}, fine-tuned+head {summary['mean']['finetuned_head']:.4f}")


if __name__ == "__main__":
    sys.exit(main())

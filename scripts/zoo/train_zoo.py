#!/usr/bin/env python3
"""Build the task zoo: one frozen head and one fine-tuned all-MiniLM-L6-v2 per task.

Two protocols; in both every merged encoder is judged with the same fixed head:
  --protocol linear-probe (the default; the shipped zoo and data/heads were made with it):
     1. features = masked mean pooling of the frozen pre-trained encoder (max 48 tokens);
        a linear head (classes x 384) is fitted on them (full-batch AdamW, fixed step count);
  --protocol zero-shot (CLIP's, as in the paper, task arithmetic, TIES, EMR, TALL masks):
     1. the head is the task's zero-shot head: row c = the L2-normalized base embedding of class c's description
        (labels.json `descriptions`), bias 0, logits = logit_scale x cos(feature, row). An existing
        <heads>/<task>/head.safetensors with a `logit_scale` (made by `tswitch head`, as data/heads-zero-shot ships)
        is used as it is; otherwise it is computed here (sentence-transformers' pooling, max 256 tokens) and written;
  then, in both:
  2. the encoder is fine-tuned with that head frozen: 4 epochs, lr 5e-5, batch 32, max 48 tokens,
     AdamW with weight_decay=0 (rows of the embedding table that never receive a gradient
     stay bit-identical to the base, which keeps task vectors sparse where they should be).

Outputs (defaults: --zoo zoo, --heads data/heads for linear-probe; zoo-zero-shot, data/heads-zero-shot for
zero-shot, so one protocol never overwrites the other's):
  <zoo>/<task>/                   Hugging Face folder (model.safetensors F32, config.json, tokenizer files)
  <heads>/<task>/head.safetensors `weight` (classes x hidden F32), `bias` (classes F32); zero-shot: and
                                  `logit_scale` in the safetensors __metadata__
  <heads>/<task>/labels.json      copy of the task's labels.json
  <zoo>/summary.json              per-task test accuracy of pretrained+head and fine-tuned+head, timings, protocol

--data (default data/tasks) may be any folder of task folders (train.jsonl, test.jsonl, labels.json). The default
task list is every task folder of --data with a train.jsonl. Deterministic for a seed on CPU (single thread,
deterministic algorithms). --resume skips tasks already in <zoo>/summary.json. --max-steps stops each task's
fine-tune after that many optimizer steps (for quick checks). Not run in CI.
Usage: HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python3 scripts/zoo/train_zoo.py [--protocol zero-shot] [--data DIR]
       [--zoo DIR] [--heads DIR] [--tasks a,b] [--seed 0] [--max-steps N]
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


class CosineHead(torch.nn.Module):
    """A zero-shot head: logits = scale x cos(feature, row) + bias (the rows are unit length)."""

    def __init__(self, weight, bias, scale):
        super().__init__()
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.bias = torch.nn.Parameter(bias, requires_grad=False)
        self.scale = float(scale)

    def forward(self, feats):
        return self.scale * torch.nn.functional.normalize(feats, dim=-1) @ self.weight.T + self.bias


def zero_shot_head(model, tok, labels_meta, hdir: Path, args, log, task):
    """The task's zero-shot head: the one in hdir when it has a logit scale, else made from the descriptions."""
    from safetensors import safe_open

    path = hdir / "head.safetensors"
    if path.exists():
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if "logit_scale" in meta:
                log(f"[{task}] zero-shot head {path} (logit scale {meta['logit_scale']})")
                return CosineHead(f.get_tensor("weight").float(), f.get_tensor("bias").float(), float(meta["logit_scale"]))
    descriptions = labels_meta.get("descriptions")
    if not descriptions or len(descriptions) != len(labels_meta["labels"]):
        sys.exit(f"train_zoo: {args.data / task / 'labels.json'}: a zero-shot head needs one description per class")
    rows = torch.nn.functional.normalize(encode(model, tok, [args.template.replace("{}", d) for d in descriptions], 256),
                                         dim=-1)
    head = CosineHead(rows.contiguous(), torch.zeros(len(descriptions)), args.logit_scale)
    hdir.mkdir(parents=True, exist_ok=True)
    tmp = hdir / ".head.safetensors.tmp"
    save_file({"weight": head.weight.detach().contiguous(), "bias": head.bias.detach().contiguous()}, str(tmp),
              metadata={"logit_scale": str(float(args.logit_scale)), "kind": "zero-shot", "template": args.template})
    tmp.rename(path)
    log(f"[{task}] zero-shot head written to {path}")
    return head


def accuracy(head, feats, labels):
    with torch.no_grad():
        pred = head(feats).argmax(-1)
    return float((pred == torch.tensor(labels)).float().mean())


def train_task(task: str, args, base: Path, tok, log):
    tdir = args.data / task
    labels_meta = json.loads((tdir / "labels.json").read_text())
    classes = len(labels_meta["labels"])
    tr_x, tr_y = read_jsonl(tdir / "train.jsonl")
    te_x, te_y = read_jsonl(tdir / "test.jsonl")
    t0 = time.time()

    hdir = args.heads / task
    seed_all(args.seed)
    model = BertModel.from_pretrained(str(base), torch_dtype=torch.float32)
    f_tr = encode(model, tok, tr_x, args.max_len)
    f_te = encode(model, tok, te_x, args.max_len)
    if args.protocol == "linear-probe":
        # 1. linear probe on the frozen pre-trained encoder
        head = fit_probe(f_tr, tr_y, classes, args.seed)
        for p in head.parameters():
            p.requires_grad_(False)
    else:
        # 1. the zero-shot head of the class descriptions
        head = zero_shot_head(model, tok, labels_meta, hdir, args, log, task)
    acc_pre = accuracy(head, f_te, te_y)
    acc_probe_train = accuracy(head, f_tr, tr_y)
    t_probe = time.time() - t0
    log(f"[{task}] {args.protocol} head: train acc {acc_probe_train:.4f}, test acc (pretrained+head) {acc_pre:.4f}, "
        f"{t_probe:.0f}s")

    hdir.mkdir(parents=True, exist_ok=True)
    if args.protocol == "linear-probe":
        save_file({"weight": head.weight.detach().contiguous().float(),
                   "bias": head.bias.detach().contiguous().float()}, str(hdir / "head.safetensors"))
    shutil.copyfile(tdir / "labels.json", hdir / "labels.json")

    # 2. fine-tune the encoder with the head frozen
    seed_all(args.seed)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed)
    n = len(tr_x)
    step = 0
    for epoch in range(args.epochs):
        if args.max_steps and step >= args.max_steps:
            break
        order = torch.randperm(n, generator=gen).tolist()
        total, seen = 0.0, 0
        for i in range(0, n, args.batch):
            if args.max_steps and step >= args.max_steps:
                break
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
        log(f"[{task}] epoch {epoch + 1}/{args.epochs}: mean loss {total / max(seen, 1):.4f}, {time.time() - t0:.0f}s")

    f_te_ft = encode(model, tok, te_x, args.max_len)
    acc_ft = accuracy(head, f_te_ft, te_y)
    out = args.zoo / task
    tmp = args.zoo / f".{task}.tmp"
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
    ap.add_argument("--protocol", choices=["linear-probe", "zero-shot"], default="linear-probe",
                    help="the frozen head: a linear probe fitted on pre-trained features (default), or the zero-shot "
                         "head of the class descriptions")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "tasks", help="folder of task folders")
    ap.add_argument("--zoo", type=Path, default=None,
                    help="fine-tunes go to ZOO/<task>/ (default zoo, or zoo-zero-shot for --protocol zero-shot)")
    ap.add_argument("--heads", type=Path, default=None,
                    help="heads go to HEADS/<task>/ (default data/heads, or data/heads-zero-shot for zero-shot)")
    ap.add_argument("--template", default="{}", help="zero-shot: prompt template of a description ({})")
    ap.add_argument("--logit-scale", type=float, default=100.0, help="zero-shot: logit scale of a new head")
    ap.add_argument("--max-steps", type=int, default=0, help="stop each fine-tune after this many steps (0: no limit)")
    ap.add_argument("--tasks", default="", help="comma-separated subset (default: all in --data)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resume", action="store_true", help="skip tasks already in ZOO/summary.json")
    args = ap.parse_args()
    zero_shot = args.protocol == "zero-shot"
    args.zoo = (args.zoo or ROOT / ("zoo-zero-shot" if zero_shot else "zoo")).resolve()
    args.heads = (args.heads or ROOT / "data" / ("heads-zero-shot" if zero_shot else "heads")).resolve()
    args.data = args.data.resolve()
    if "{}" not in args.template:
        ap.error("--template must contain {}")

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    base = model_path()
    tasks = [t for t in args.tasks.split(",") if t] or sorted(
        p.name for p in args.data.iterdir() if (p / "train.jsonl").exists())
    for t in tasks:
        if not (args.data / t / "train.jsonl").exists():
            sys.exit(f"train_zoo: {args.data / t}/train.jsonl does not exist")
    args.zoo.mkdir(parents=True, exist_ok=True)
    summary_path = args.zoo / "summary.json"
    summary = json.loads(summary_path.read_text()) if args.resume and summary_path.exists() else {}
    summary.setdefault("tasks", {})
    summary["protocol"] = {"base": "sentence-transformers/all-MiniLM-L6-v2", "epochs": args.epochs, "lr": args.lr,
                           "batch": args.batch, "max_length": args.max_len, "optimizer": "AdamW weight_decay=0",
                           "seed": args.seed, "threads": args.threads, "torch": torch.__version__,
                           "pooling": "masked mean", "protocol": args.protocol,
                           "head": "linear probe on frozen pre-trained features, frozen" if not zero_shot else
                           f"zero-shot: normalized description embeddings (template {args.template!r}), "
                           f"logit scale x cosine, frozen"}
    if args.max_steps:
        summary["protocol"]["max_steps"] = args.max_steps

    def log(msg):
        print(time.strftime("%H:%M:%S"), msg, flush=True)

    tok = AutoTokenizer.from_pretrained(str(base))
    start = time.time()
    for task in tasks:
        if args.resume and task in summary["tasks"] and (args.zoo / task / "model.safetensors").exists():
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

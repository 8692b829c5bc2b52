#!/usr/bin/env python3
"""Per-example Auto-Switch routing rules beyond LDA top-1 (issue 16), measured offline on the zero-shot protocol.

For the 8 original tasks (data/tasks, heads data/heads-zero-shot, T-Switch packs at α = 0.5 and 0.7) every text is
embedded ONCE with the base (all-MiniLM-L6-v2 in transformers: masked mean pooling of every layer's hidden states)
and with each task's switched model (`tswitch embed BASE --pack TASK.tsw --max-length 48`, the features `tswitch
eval` computes), cached as .npy under the cache folder; the rules are then scored without another forward pass.

Texts: test = each task's test.jsonl (only scored); fit = the first 1,000 train texts per task (what `tswitch route
--build --per-task 1000` fits the LDA router on, max length 128, unit length); tune = train texts 800..999 per task.
Everything tuned (the gate threshold τ, the weight β, multi-layer λ) is chosen on tune with a router fitted on train
texts 0..799 only; the test figures then use the router fitted on all 1,000 with the tuned setting.

Rules (cost = encoder passes per input: the base pass for routing, then one per candidate pack run):
  lda-top1                       the router's best task (OOD → base)                                 2
  top2-CONF                      run the top-2 tasks' packs, keep the one whose own head is more confident  3
  top2-CONF-gated                the same only when the router's top-2 score margin is below τ       2 + gated share
  topk-CONF                      the same over the top k tasks                                        1 + k
  mix-CONF                       top-2 by router log-posterior + β · log confidence (β tuned)         3
  lda-LAYERS                     LDA on other base features (mean of layers, concatenation)           2
CONF: maxprob (max softmax), margin (p1 − p2), entropy (1 − H/log C), maxcos (max cosine to a class row).

Usage: OMP_NUM_THREADS=1 nice -n 15 python3 bench/routing-study.py [--tswitch BIN] [--packs DIR] [--cache DIR]
       [--markdown]
  --packs DIR holds drop-0.5/ and drop-0.7/ with one TASK.tsw per task (bench/reproduce --protocol zero-shot makes
  them: bench/out/reproduce-zero-shot-8/packs). Reference figures (bench/out/reproduce-zero-shot-8/results): LDA
  per example at α = 0.7 routes 91.5 % and is right task-agnostic 69.9 %.
"""
import argparse, hashlib, json, os, subprocess, sys
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TASKS = ["code-lang", "deb-section", "fortune", "lang-id", "man-section", "unicode-cat", "wn-noun", "wn-verb"]
ALPHAS = ["0.5", "0.7"]
FIT_N, TUNE_FIT_N = 1000, 800
EVAL_LEN, FIT_LEN = 48, 128          # tswitch eval's default max length; route --build embeds at 128
LAMBDA = 0.03                        # LDARouter.defaultShrinkage
# bench/reproduce zero-shot, 8 tasks (docs/results.md): pre-trained, individual fine-tunes, T-Switch task known.
PRETRAINED, INDIVIDUAL = 48.5, 78.3
TASK_KNOWN = {"0.5": 77.3, "0.7": 75.7}
CONFS = ["maxprob", "margin", "entropy", "maxcos"]
# The 20 tasks of ../shared/tasks in the order bench/reproduce --tasks 8|14|20 takes them (the first 8 are TASKS).
TASK_ORDER = TASKS + ["code-lang-b", "deb-lang", "emoji-group", "fortune-c", "lang-id-b", "man-pkg",
                      "perl-module", "py-module", "unicode-script", "wn-animal", "wn-domain", "wn-noun-b"]


def read_jsonl(path):
    return [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]


def digest(texts, *extra):
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    for e in extra:
        h.update(str(e).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- features

_enc = None


def base_layers(texts, maxlen, cache):
    """[N, 7, D]: masked mean pooling of the embedding output and each of the 6 layers (transformers, F32)."""
    path = os.path.join(cache, f"base-layers-{maxlen}-{digest(texts, maxlen)}.npy")
    if os.path.exists(path):
        return np.load(path)
    global _enc
    import torch
    from transformers import AutoModel, AutoTokenizer
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if _enc is None:
        mp = subprocess.check_output([os.path.join(ROOT, "scripts/model-path")], text=True).strip()
        _enc = (AutoTokenizer.from_pretrained(mp), AutoModel.from_pretrained(mp).eval())
    tok, model = _enc
    order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths share a batch: less padding
    out = np.zeros((len(texts), model.config.num_hidden_layers + 1, model.config.hidden_size), np.float32)
    with torch.no_grad():
        for s in range(0, len(texts), 64):
            idx = order[s:s + 64]
            b = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=maxlen, return_tensors="pt")
            hs = model(**b, output_hidden_states=True).hidden_states
            m = b["attention_mask"].unsqueeze(-1).float()
            pooled = torch.stack([(h * m).sum(1) / m.sum(1).clamp(min=1e-9) for h in hs], 1)
            out[idx] = pooled.numpy()
    np.save(path, out)
    return out


def layers_3_6(texts, cache, maxlen=48):
    """[N, 4·D]: layers 3-6 mean-pooled, each at unit length, concatenated (the shipped layer router's features,
    without its 1/√4 scale)."""
    return unit(base_layers(texts, maxlen, cache)[:, 3:7]).reshape(len(texts), -1).astype(np.float32)


def switched(texts, task, pack, tswitch, cache):
    """[N, D] features of the base switched by `pack` (tswitch embed --pack, max length 48, not normalized)."""
    with open(pack, "rb") as f:
        pd = hashlib.sha256(f.read()).hexdigest()[:12]
    path = os.path.join(cache, f"switched-{task}-{pd}-{digest(texts, EVAL_LEN)}.npy")
    if os.path.exists(path):
        return np.load(path)
    from safetensors.numpy import load_file
    mp = subprocess.check_output([os.path.join(ROOT, "scripts/model-path")], text=True).strip()
    jl, st = path + ".jsonl", path + ".safetensors"
    with open(jl, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t, "task": task}) + "\n")
    subprocess.run([tswitch, "embed", mp, "--input", jl, "--output", st, "--pack", pack, "--max-length",
                    str(EVAL_LEN)], check=True, stdout=subprocess.DEVNULL)
    e = load_file(st)["embeddings"].astype(np.float32)
    np.save(path, e)
    os.remove(jl)
    os.remove(st)
    return e


def unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


# ---------------------------------------------------------------- LDA router (LDARouter.swift, in numpy)

class LDA:
    def __init__(self, x, y, lam=LAMBDA, hold_out_every=5):
        self._fit(x, y, lam)
        # OOD threshold as LDARouter.fit: 1st percentile of the best score on every 5th row, from a fit without them.
        held = np.arange(len(x)) % hold_out_every == hold_out_every - 1
        part = LDA.__new__(LDA)
        part._fit(x[~held], y[~held], lam)
        self.threshold = np.percentile(part.scores(x[held]).max(1), 1.0)

    def _fit(self, x, y, lam):
        x = x.astype(np.float64)
        t = y.max() + 1
        self.c = x.mean(0)
        mus = np.stack([x[y == k].mean(0) for k in range(t)])
        r = x - mus[y]
        s = r.T @ r / (len(x) - t)
        d = x.shape[1]
        sigma = (1 - lam) * s + lam * np.trace(s) / d * np.eye(d)
        self.L = np.linalg.cholesky(sigma)
        mu = mus - self.c
        self.w = np.linalg.solve(sigma, mu.T).T
        self.b = -0.5 * (mu * self.w).sum(1)
        self.threshold = -np.inf

    def scores(self, x):
        xc = x.astype(np.float64) - self.c
        z = np.linalg.solve(self.L, xc.T).T
        return xc @ self.w.T + self.b - 0.5 * (z * z).sum(1, keepdims=True)


# ---------------------------------------------------------------- heads and confidence

def load_head(path):
    from safetensors import safe_open
    with safe_open(path, "np") as f:
        w, b = f.get_tensor("weight"), f.get_tensor("bias")
        scale = f.metadata().get("logit_scale") if f.metadata() else None
    return w.astype(np.float64), b.astype(np.float64), (float(scale) if scale else None)


def logits(head, feats):
    w, b, scale = head
    f = feats.astype(np.float64)
    if scale is not None:
        return scale * (unit(f) @ w.T) + b
    return f @ w.T + b


def confidence(lg, kind, head):
    z = lg - lg.max(1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    if kind == "maxprob":
        return p.max(1)
    if kind == "margin":
        s = np.sort(p, 1)
        return s[:, -1] - s[:, -2]
    if kind == "entropy":
        h = -(p * np.log(np.maximum(p, 1e-30))).sum(1)
        return 1 - h / np.log(lg.shape[1])
    if kind == "maxcos":
        return lg.max(1) / (head[2] or 1.0)
    raise ValueError(kind)


# ---------------------------------------------------------------- scoring

class Split:
    """One evaluation split: true task and label per text, router scores, per task t the head-of-t predictions and
    confidences on pack-t features (for verification), and the true task's head on every pack's features (for the
    accuracy with the route's pack)."""

    def __init__(self, task, label, scores, ood, heads, feats, base_feats):
        self.task, self.label, self.scores, self.ood = task, label, scores, ood
        n, T = len(task), len(TASKS)
        self.own_pred = np.zeros((n, T), int)       # head t on pack t
        self.own_conf = {k: np.zeros((n, T)) for k in CONFS}
        self.true_pred = np.zeros((n, T + 1), int)  # true task's head on pack t (column T: the base)
        for t in range(T):
            lg = logits(heads[t], feats[t])
            self.own_pred[:, t] = lg.argmax(1)
            for k in CONFS:
                self.own_conf[k][:, t] = confidence(lg, k, heads[t])
        for u in range(T):
            rows = task == u
            for t in range(T):
                self.true_pred[rows, t] = logits(heads[u], feats[t][rows]).argmax(1)
            self.true_pred[rows, T] = logits(heads[u], base_feats[rows]).argmax(1)

    def evaluate(self, route, passes):
        """route: [n] task index (len(TASKS): the base). Means over tasks, as tswitch eval reports them."""
        n, T = len(self.task), len(TASKS)
        routed_right = route == self.task
        own_right = self.own_pred[np.arange(n), np.minimum(route, T - 1)] == self.label
        agnostic = routed_right & own_right
        acc = self.true_pred[np.arange(n), route] == self.label
        per = lambda v: float(np.mean([v[self.task == u].mean() for u in range(T)]) * 100)
        return {"routed": per(routed_right), "agnostic": per(agnostic), "accuracy": per(acc),
                "passes": float(np.mean(passes)), "base": float((route == T).mean() * 100)}


def route_top1(sp):
    r = sp.scores.argmax(1)
    r = np.where(sp.ood, len(TASKS), r)
    return r, np.where(sp.ood, 1, 2)


def route_verify(sp, conf, k=2, tau=np.inf):
    """Top-k by router score; run their packs when the top-2 margin is below tau and keep the most confident."""
    n = len(sp.task)
    order = np.argsort(-sp.scores, 1, kind="stable")
    top = order[:, :k]
    srt = np.take_along_axis(sp.scores, order[:, :2], 1)
    gate = (srt[:, 0] - srt[:, 1]) < tau
    c = np.take_along_axis(sp.own_conf[conf], top, 1)
    pick = top[np.arange(n), c.argmax(1)]
    r = np.where(gate, pick, top[:, 0])
    r = np.where(sp.ood, len(TASKS), r)
    passes = np.where(sp.ood, 1, np.where(gate, 1 + k, 2))
    return r, passes


def route_mix(sp, conf, beta):
    """Top-2 by router log-posterior (softmax of the LDA scores) + β · log confidence of each task's own head."""
    n = len(sp.task)
    top = np.argsort(-sp.scores, 1, kind="stable")[:, :2]
    s = sp.scores - sp.scores.max(1, keepdims=True)
    logpost = s - np.log(np.exp(s).sum(1, keepdims=True))
    v = np.take_along_axis(logpost, top, 1) + beta * np.log(np.maximum(np.take_along_axis(sp.own_conf[conf], top, 1),
                                                                        1e-12))
    r = top[np.arange(n), v.argmax(1)]
    return np.where(sp.ood, len(TASKS), r), np.where(sp.ood, 1, 3)


# ---------------------------------------------------------------- main

FEATURE_SETS = {  # name -> base feature of a [N, 7, D] layer stack (unit rows, as the router is fitted on)
    "layer 6 (base features)": lambda h: unit(h[:, 6]),
    "mean of layers 3-6": lambda h: unit(h[:, 3:7].mean(1)),
    "concat layers 3-6": lambda h: np.concatenate([unit(h[:, l]) for l in range(3, 7)], 1) / 2.0,
    "concat layers 1-6": lambda h: np.concatenate([unit(h[:, l]) for l in range(1, 7)], 1) / np.sqrt(6),
    "concat layers 4, 6": lambda h: np.concatenate([unit(h[:, 4]), unit(h[:, 6])], 1) / np.sqrt(2),
    "concat layers 3, 6": lambda h: np.concatenate([unit(h[:, 3]), unit(h[:, 6])], 1) / np.sqrt(2),
    "concat layers 2-6": lambda h: np.concatenate([unit(h[:, l]) for l in range(2, 7)], 1) / np.sqrt(5),
}
VERIFIED = ("layer 6 (base features)", "mean of layers 3-6", "concat layers 3-6", "concat layers 1-6")


TABLE = [("layer 6 (base features)", ["lda-top1", "top2-maxprob", "top2-margin", "top2-entropy", "top2-maxcos",
                                     "top2-maxprob-gated", "top2-margin-gated", "top2-entropy-gated",
                                     "top2-maxcos-gated", "top3-maxprob", "top8-maxprob", "mix-maxprob",
                                     "mix-entropy"]),
         ("mean of layers 3-6", ["lda-top1", "top2-maxprob-gated", "mix-entropy"]),
         ("concat layers 3, 6", ["lda-top1"]), ("concat layers 4, 6", ["lda-top1"]),
         ("concat layers 3-6", ["lda-top1", "top2-maxprob", "top2-margin-gated", "mix-maxprob"]),
         ("concat layers 2-6", ["lda-top1"]), ("concat layers 1-6", ["lda-top1", "top2-maxcos-gated"])]


def markdown(rows):
    """The docs/routing.md tables: one per α, the rows of TABLE."""
    out = []
    for a in reversed(ALPHAS):
        out += [f"\nα = {a} (T-Switch with the task known: {TASK_KNOWN[a]} %):\n",
                "| features (λ) | rule (tuned knob) | routed | task-agnostic | accuracy | gain | of task-known gain "
                "| passes / input | tune: task-agnostic |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for f, rules in TABLE:
            for rule in rules:
                x = next((y for y in rows if y["features"] == f and y["alpha"] == a and y["rule"] == rule), None)
                if x is None:
                    continue
                knob = ", ".join(f"{'τ' if k == 'tau' else 'β'} = {v}" for k, v in x["knob"].items())
                name = rule + (f" ({knob})" if knob else "")
                fl = f.replace("layer 6 (base features)", "final embedding") + f" (λ {x['lambda']})"
                out.append(f"| {fl} | {name} | {x['routed']:.1f} % | {x['agnostic']:.1f} % | {x['accuracy']:.1f} % "
                           f"| {x['gain']:.1f} % | {x['kept_of_task_known']:.1f} % | {x['passes']:.2f} "
                           f"| {x['tune_agnostic']:.1f} % |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tswitch", default=os.environ.get("TSWITCH_BIN", os.path.join(ROOT, ".build/release/tswitch")))
    ap.add_argument("--packs", default=os.path.join(ROOT, "bench/out/reproduce-zero-shot-8/packs"))
    ap.add_argument("--cache", default=os.path.join(ROOT, "bench/out/routing-study"))
    ap.add_argument("--json", help="write every measured row here")
    args = ap.parse_args()
    os.makedirs(args.cache, exist_ok=True)
    data = os.path.join(ROOT, "data/tasks")
    heads = [load_head(os.path.join(ROOT, "data/heads-zero-shot", t, "head.safetensors")) for t in TASKS]

    test, tune, fit = [], [], []
    for i, t in enumerate(TASKS):
        test += [(i, r["text"], r["label"]) for r in read_jsonl(os.path.join(data, t, "test.jsonl"))]
        tr = read_jsonl(os.path.join(data, t, "train.jsonl"))
        if len(tr) < FIT_N:
            sys.exit(f"routing-study: {t} has {len(tr)} train texts; needs {FIT_N}")
        fit += [(i, r["text"], r["label"]) for r in tr[:FIT_N]]
        tune += [(i, r["text"], r["label"]) for r in tr[TUNE_FIT_N:FIT_N]]
    eval_texts = [x[1] for x in test] + [x[1] for x in tune]
    print(f"embedding: {len(fit)} fit texts (base, len {FIT_LEN}), {len(eval_texts)} test+tune texts (base and "
          f"{len(TASKS)} packs x {len(ALPHAS)} α, len {EVAL_LEN})", file=sys.stderr)
    fit_h = base_layers([x[1] for x in fit], FIT_LEN, args.cache)
    ev_h = base_layers(eval_texts, EVAL_LEN, args.cache)
    fit_y = np.array([x[0] for x in fit])
    fit_in_tune = np.concatenate([np.arange(i * FIT_N, i * FIT_N + TUNE_FIT_N) for i in range(len(TASKS))])
    nt = len(test)
    sw = {a: [switched(eval_texts, t, os.path.join(args.packs, f"drop-{a}", f"{t}.tsw"), args.tswitch, args.cache)
              for t in TASKS] for a in ALPHAS}
    base_eval = ev_h[:, 6]
    parts = {"test": (slice(0, nt), np.array([x[0] for x in test]), np.array([x[2] for x in test])),
             "tune": (slice(nt, None), np.array([x[0] for x in tune]), np.array([x[2] for x in tune]))}

    rows = []
    for fname, ff in FEATURE_SETS.items():
        fx, ex = ff(fit_h), ff(ev_h)
        lams = [LAMBDA] if fname.startswith("layer 6") else [0.01, 0.03, 0.1, 0.3]
        # λ for the other feature sets: best tune routing with the 800-text router.
        best = None
        for lam in lams:
            r = LDA(fx[fit_in_tune], fit_y[fit_in_tune], lam)
            sc = r.scores(ex[parts["tune"][0]])
            acc = (sc.argmax(1) == parts["tune"][1]).mean()
            if best is None or acc > best[0]:
                best = (acc, lam)
        lam = best[1]
        routers = {"tune": LDA(fx[fit_in_tune], fit_y[fit_in_tune], lam), "test": LDA(fx, fit_y, lam)}
        for a in ALPHAS:
            sp = {}
            for name, (sl, task, label) in parts.items():
                sc = routers[name].scores(ex[sl])
                sp[name] = Split(task, label, sc, sc.max(1) < routers[name].threshold, heads,
                                 [f[sl] for f in sw[a]], base_eval[sl])
            rules = [(f"lda-top1", {}, lambda s, **_: route_top1(s))]
            if fname in VERIFIED:
                for conf in CONFS:
                    rules.append((f"top2-{conf}", {}, lambda s, conf=conf: route_verify(s, conf)))
                    rules.append((f"top2-{conf}-gated", {"tau": [0.5, 1, 2, 3, 4, 6, 8, 12, 16]},
                                  lambda s, conf=conf, tau=np.inf: route_verify(s, conf, 2, tau)))
                    rules.append((f"top3-{conf}", {}, lambda s, conf=conf: route_verify(s, conf, 3)))
                    rules.append((f"mix-{conf}", {"beta": [0.25, 0.5, 1, 2, 4, 8, 16]},
                                  lambda s, conf=conf, beta=1.0: route_mix(s, conf, beta)))
                rules.append(("top8-maxprob", {}, lambda s: route_verify(s, "maxprob", 8)))
            for rname, grid, fn in rules:
                knob = {}
                if grid:
                    (key, values), = grid.items()
                    tuned = [(sp["tune"].evaluate(*fn(sp["tune"], **{key: v}))["agnostic"], -i, v)
                             for i, v in enumerate(values)]
                    knob = {key: max(tuned)[2]}
                tn = sp["tune"].evaluate(*fn(sp["tune"], **knob))
                ts = sp["test"].evaluate(*fn(sp["test"], **knob))
                gain = (ts["accuracy"] - PRETRAINED) / (INDIVIDUAL - PRETRAINED) * 100
                kept = (ts["accuracy"] - PRETRAINED) / (TASK_KNOWN[a] - PRETRAINED) * 100
                rows.append({"features": fname, "lambda": lam, "alpha": a, "rule": rname, "knob": knob,
                             "tune_agnostic": tn["agnostic"], **ts, "gain": gain, "kept_of_task_known": kept})
                print(f"{fname:24s} λ={lam:<5} α={a} {rname:22s} {str(knob):14s} tune {tn['agnostic']:5.1f} | "
                      f"routed {ts['routed']:5.1f} agnostic {ts['agnostic']:5.1f} acc {ts['accuracy']:5.1f} "
                      f"gain {gain:5.1f} kept {kept:5.1f} base {ts['base']:.1f} passes {ts['passes']:.2f}",
                      flush=True)
    print(markdown(rows))
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump(rows, f, indent=1)
        os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Per-example routing at 8, 14 and 20 tasks: the shipped LDA router against learned metrics for k-NN (Auto-FlexSwitch's
direction, arXiv 2604.28109: k-NN under a learnable low-rank metric) and a trained linear classifier, on the same base
features (layers 3-6, mean-pooled, each at unit length, concatenated: 1,536 values; max 48 tokens).

Fitted on the first 1,000 train texts per task; the settings (rank, epochs, k, weight decay) are fixed up front, and
checked on a tune split (a router fitted on texts 0..799, scored on 800..999) before the test splits are scored. No
fine-tune or head is used: the figure is the share of test texts sent to their own task (mean over tasks).

Rules:
  lda                  LDA task prototypes, shared covariance, shrinkage λ (what `tswitch route --build --kind lda` fits)
  knn-cos-100          the paper's k-NN (cosine, k = 10) over 100 query texts per task, per example
  knn-lda              k-NN (k = 10) in the LDA-whitened space (Σ_w^-1/2, shrinkage λ) over all fit texts
  knn-nca-R            k-NN (k = 10) under a learned rank-R metric L (‖L(x − y)‖), trained with the NCA loss (soft
                       neighbours within a minibatch, same task = right) — the Auto-FlexSwitch-style router
  nca-proto-R          nearest task mean under the same learned metric
  logreg               a linear softmax classifier over the tasks (Adam, weight decay), trained on the fit texts

Usage: OMP_NUM_THREADS=2 python3 bench/metric-routing-study.py [--tasks 8,14,20] [--ranks 64,256] [--split test|tune]
Features come from bench/routing-study.py's cache (transformers, bench/out/routing-study).
"""
import argparse, importlib.util, os, sys, time
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("routing_study", os.path.join(ROOT, "bench/routing-study.py"))
rs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rs)
TASK_ORDER = rs.TASK_ORDER
K = 10


def features(texts, cache):
    return rs.layers_3_6(texts, cache)


def knn_vote(train, labels, test, n_classes, k=K, metric="euclid"):
    """Hard majority vote of the k nearest fit rows (ties: the nearest)."""
    out = np.empty(len(test), np.int64)
    tn = (train * train).sum(1)
    for s in range(0, len(test), 1024):
        q = test[s:s + 1024]
        if metric == "cos":
            d = -(q @ train.T)
        else:
            d = tn[None, :] - 2 * (q @ train.T)
        idx = np.argpartition(d, k, axis=1)[:, :k]
        order = np.take_along_axis(d, idx, 1).argsort(1)
        idx = np.take_along_axis(idx, order, 1)
        votes = np.zeros((len(q), n_classes))
        for j in range(k):
            votes[np.arange(len(q)), labels[idx[:, j]]] += 1 + 1e-3 * (k - j)
        out[s:s + 1024] = votes.argmax(1)
    return out


def whitener(x, y, lam):
    """Σ_w^-1/2 of the shrunk within-class covariance (the metric LDA implies)."""
    mu = np.stack([x[y == c].mean(0) for c in np.unique(y)])
    xc = x - mu[y]
    cov = xc.T @ xc / len(x)
    cov = (1 - lam) * cov + lam * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    w, v = np.linalg.eigh(cov)
    return (v / np.sqrt(w)).astype(np.float32)


def train_nca(x, y, rank, epochs, seed=0, batch=1024, lr=3e-3):
    """A rank-R linear map trained with the NCA loss on minibatches (soft neighbours of the same task)."""
    import torch
    torch.manual_seed(seed)
    X = torch.from_numpy(x)
    Y = torch.from_numpy(y)
    L = torch.nn.Parameter(torch.randn(x.shape[1], rank) / x.shape[1] ** 0.5)
    opt = torch.optim.Adam([L], lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=g)
        for s in range(0, len(X), batch):
            b = perm[s:s + batch]
            z = X[b] @ L
            d = torch.cdist(z, z).pow(2)
            d.fill_diagonal_(float("inf"))
            logp = torch.log_softmax(-d, 1)
            same = (Y[b][:, None] == Y[b][None, :]).float()
            same.fill_diagonal_(0)
            loss = -torch.logsumexp(logp + torch.log(same.clamp(min=1e-30)), 1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return L.detach().numpy()


def train_logreg(x, y, n, epochs, wd=1e-4, seed=0, batch=256, lr=1e-3):
    import torch
    torch.manual_seed(seed)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    lin = torch.nn.Linear(x.shape[1], n)
    opt = torch.optim.AdamW(lin.parameters(), lr=lr, weight_decay=wd)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=g)
        for s in range(0, len(X), batch):
            b = perm[s:s + batch]
            loss = torch.nn.functional.cross_entropy(lin(X[b]), Y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    W, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    return lambda z: (z @ W.T + b).argmax(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="8,14,20")
    ap.add_argument("--ranks", default="64,256")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lam", type=float, default=0.01)
    ap.add_argument("--split", choices=["test", "tune"], default="test")
    ap.add_argument("--cache", default=os.path.join(ROOT, "bench/out/routing-study"))
    args = ap.parse_args()
    import torch
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    os.makedirs(args.cache, exist_ok=True)
    fit_n = 1000 if args.split == "test" else 800
    fit, score = {}, {}
    for t in TASK_ORDER:
        d = os.path.join(ROOT, "data/tasks", t)
        tr = rs.read_jsonl(os.path.join(d, "train.jsonl"))
        fit[t] = [r["text"] for r in tr[:fit_n]]
        score[t] = ([r["text"] for r in rs.read_jsonl(os.path.join(d, "test.jsonl"))] if args.split == "test"
                    else [r["text"] for r in tr[800:1000]])
    ffit = features([s for t in TASK_ORDER for s in fit[t]], args.cache)
    fscore = features([s for t in TASK_ORDER for s in score[t]], args.cache)
    o_fit = np.cumsum([0] + [len(fit[t]) for t in TASK_ORDER])
    o_sc = np.cumsum([0] + [len(score[t]) for t in TASK_ORDER])
    ranks = [int(r) for r in args.ranks.split(",") if r]
    cols = ["lda", "knn-cos-100", "knn-lda"] + [f"{p}-{r}" for r in ranks for p in ("knn-nca", "nca-proto")] + ["logreg"]
    print(f"split: {args.split}; fit {fit_n} texts per task; k = {K}; λ = {args.lam}; NCA epochs {args.epochs}")
    print("| tasks | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for n in map(int, args.tasks.split(",")):
        x, xt = ffit[:o_fit[n]], fscore[:o_sc[n]]
        y = np.concatenate([np.full(len(fit[t]), i) for i, t in enumerate(TASK_ORDER[:n])])
        truth = np.concatenate([np.full(len(score[t]), i) for i, t in enumerate(TASK_ORDER[:n])])
        per = lambda pred: 100 * np.mean([np.mean(pred[truth == i] == i) for i in range(n)])
        row, times = {}, {}
        t0 = time.time()
        row["lda"] = per(rs.LDA(x, y, args.lam).scores(xt).argmax(1))
        first100 = np.concatenate([np.arange(o_fit[i], o_fit[i] + 100) for i in range(n)])
        row["knn-cos-100"] = per(knn_vote(x[first100], y[first100], xt, n, metric="cos"))
        w = whitener(x, y, args.lam)
        row["knn-lda"] = per(knn_vote(x @ w, y, xt @ w, n))
        for r in ranks:
            t0 = time.time()
            L = train_nca(x, y, r, args.epochs)
            times[r] = time.time() - t0
            z, zt = x @ L, xt @ L
            row[f"knn-nca-{r}"] = per(knn_vote(z, y, zt, n))
            mu = np.stack([z[y == c].mean(0) for c in range(n)])
            row[f"nca-proto-{r}"] = per(((zt[:, None, :] - mu[None]) ** 2).sum(-1).argmin(1))
        row["logreg"] = per(train_logreg(x, y, n, args.epochs)(xt))
        print(f"| {n} | " + " | ".join(f"{row[c]:.1f} %" for c in cols) + " |"
              + "  (NCA training: " + ", ".join(f"rank {r} {times[r]:.0f} s" for r in ranks) + ")")
        sys.stdout.flush()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Per-example task routing study (issue 16): which router sends one input at a time to its task.

Embeddings: the base all-MiniLM-L6-v2 (scripts/model-path), mean-pooled, L2-normalised, max length 128 — what
`tswitch embed --normalize` computes. Cached under /tmp/router-study-cache (one .npy per task split).
Everything that is tuned (shrinkage λ, k-NN's centring mean, the OOD threshold) is tuned on TRAIN only: the train
split of each task is cut into a fitting part and a held-out part (last 20 %, at most 200 rows); the test split is
only scored.

Usage: python3 bench/router-study.py [TASKS_DIR ...]   (default: data/tasks ../shared/tasks)
"""
import json, os, subprocess, sys, hashlib
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CACHE = "/tmp/router-study-cache"
MAXLEN = 128
_model = None


def model():
    global _model
    if _model is None:
        from sentence_transformers import SentenceTransformer
        path = subprocess.check_output([os.path.join(ROOT, "scripts/model-path")], text=True).strip()
        _model = SentenceTransformer(path, device="cpu")
        _model.max_seq_length = MAXLEN
    return _model


def embed_file(path):
    raw = open(path, "rb").read()
    key = hashlib.sha256(raw + str(MAXLEN).encode()).hexdigest()[:20]
    os.makedirs(CACHE, exist_ok=True)
    cached = os.path.join(CACHE, key + ".npy")
    if os.path.exists(cached):
        return np.load(cached)
    texts = [json.loads(l)["text"] for l in raw.decode().splitlines() if l.strip()]
    e = model().encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
    np.save(cached, e)
    return e


def load(tasks_dir):
    names = sorted(d for d in os.listdir(tasks_dir) if os.path.isfile(os.path.join(tasks_dir, d, "train.jsonl")))
    return names, [embed_file(os.path.join(tasks_dir, n, "train.jsonl")) for n in names], \
        [embed_file(os.path.join(tasks_dir, n, "test.jsonl")) for n in names], \
        [np.array([json.loads(l)["label"] for l in open(os.path.join(tasks_dir, n, "train.jsonl")) if l.strip()])
         for n in names]


# ---------------------------------------------------------------- routers

def knn(Q, ql, X, k=10, metric="cosine", centre=None):
    if centre is not None:
        Q = Q - centre
        X = X - centre
    if metric == "cosine":
        Q = Q / np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-12)
        X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    nn = np.zeros((len(X), k), int)
    d0 = np.zeros(len(X))
    for s in range(0, len(X), 1024):  # chunks: a full [test, train] distance matrix does not fit for 20 tasks
        x = X[s:s + 1024]
        d = -x @ Q.T if metric == "cosine" else (x * x).sum(1)[:, None] - 2 * x @ Q.T + (Q * Q).sum(1)[None, :]
        part = np.argpartition(d, k, axis=1)[:, :k]
        dp = np.take_along_axis(d, part, 1)
        o = np.argsort(dp, axis=1, kind="stable")
        nn[s:s + 1024] = np.take_along_axis(part, o, 1)
        d0[s:s + 1024] = np.take_along_axis(dp, o, 1)[:, 0]
    T = ql.max() + 1
    votes = np.zeros((len(X), T))
    for j in range(k):
        np.add.at(votes, (np.arange(len(X)), ql[nn[:, j]]), 1)
    return votes / k, -d0


def lda_fit(groups, lam, prior=False):
    """groups: list of [n_g, D] arrays. Shared covariance Σ = (1−λ)S + λ·tr(S)/D·I (S pooled within-group).
    Returns W [G, D], b [G]: score_g(x) = w_g·x + b_g with w_g = Σ⁻¹μ_g, b_g = −½ μ_gᵀΣ⁻¹μ_g (+ log prior)."""
    mus = np.stack([g.mean(0) for g in groups]).astype(np.float64)
    D = mus.shape[1]
    S = np.zeros((D, D))
    n = 0
    for g, m in zip(groups, mus):
        c = g.astype(np.float64) - m
        S += c.T @ c
        n += len(g)
    S /= max(1, n - len(groups))
    Sig = (1 - lam) * S + lam * np.trace(S) / D * np.eye(D)
    W = np.linalg.solve(Sig, mus.T).T
    b = -0.5 * (W * mus).sum(1)
    lda_fit.last_precision = np.linalg.inv(Sig)
    if prior:
        sizes = np.array([len(g) for g in groups], float)
        b += np.log(sizes / sizes.sum())
    return W, b


def quad(X):
    """½ xᵀΣ⁻¹x: the same for every task, so it leaves the argmax alone, but it makes the best score the
    (negative half squared) Mahalanobis distance to the nearest prototype: what the OOD threshold needs (a linear
    score grows without bound far from every task)."""
    P = lda_fit.last_precision
    return 0.5 * np.einsum("ij,jk,ik->i", X, P, X)[:, None]


LAMBDAS = [0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9]


def split_train(tr, trl, rng):
    """Fit part / held-out part of each task's train split (held-out: 20 %, at most 200 rows)."""
    fit, hold, fitl = [], [], []
    for X, L in zip(tr, trl):
        p = rng.permutation(len(X))
        h = min(200, len(X) // 5)
        hold.append(X[p[:h]]); fit.append(X[p[h:]]); fitl.append(L[p[h:]])
    return fit, fitl, hold


def first(xs, ls, N, rng):
    out, outl = [], []
    for X, L in zip(xs, ls):
        if N is None or N >= len(X):
            out.append(X); outl.append(L)
        else:
            p = rng.permutation(len(X))[:N]
            out.append(X[p]); outl.append(L[p])
    return out, outl


def task_scores_lda(fit, fitl, X, lam, by_class):
    if not by_class:
        W, b = lda_fit(fit, lam)
        return X @ W.T + b - quad(X)
    groups, owner = [], []
    for t, (F, L) in enumerate(zip(fit, fitl)):
        for c in np.unique(L):
            groups.append(F[L == c]); owner.append(t)
    W, b = lda_fit(groups, lam)
    s = X @ W.T + b - quad(X)
    owner = np.array(owner)
    out = np.full((len(X), len(fit)), -np.inf)
    for t in range(len(fit)):
        out[:, t] = s[:, owner == t].max(1)
    return out


def choose_lambda(fit, fitl, hold, by_class):
    """λ by held-out train accuracy (the held-out part never enters the fit)."""
    Xh = np.concatenate(hold)
    yh = np.concatenate([np.full(len(h), t) for t, h in enumerate(hold)])
    best = None
    for lam in LAMBDAS:
        acc = (task_scores_lda(fit, fitl, Xh, lam, by_class).argmax(1) == yh).mean()
        if best is None or acc > best[1]:
            best = (lam, acc)
    return best[0]


def margin(scores):
    """Top-1 score minus top-2 score (LDA log-odds between the best two tasks)."""
    s = np.sort(scores, axis=1)
    return s[:, -1] - s[:, -2]


def study(tasks_dir, rng_seed=0):
    names, tr, te, trl = load(tasks_dir)
    T = len(names)
    Xt = np.concatenate(te)
    yt = np.concatenate([np.full(len(x), t) for t, x in enumerate(te)])
    rows = []
    rng = np.random.default_rng(rng_seed)
    fit_all, fitl_all, hold = split_train(tr, trl, rng)
    Xh = np.concatenate(hold)
    yh = np.concatenate([np.full(len(h), t) for t, h in enumerate(hold)])

    def per_task(pred):
        return [float((pred[yt == t] == t).mean()) for t in range(T)]

    for N in [100, 300, 1000, None]:
        fit, fitl = first(fit_all, fitl_all, N, np.random.default_rng(rng_seed + 1))
        Q = np.concatenate(fit)
        ql = np.concatenate([np.full(len(f), t) for t, f in enumerate(fit)])
        nlabel = "all" if N is None else str(N)
        centre = Q.mean(0)
        for label, metric, c in [("k-NN Euclidean (official)", "euclid", None), ("k-NN cosine", "cosine", None),
                                 ("k-NN centred cosine", "cosine", centre)]:
            v, _ = knn(Q, ql, Xt, metric=metric, centre=c)
            rows.append((label, nlabel, "k=10", float((v.argmax(1) == yt).mean()), None, len(Q) * Q.shape[1] * 4))
        for by_class in [False, True]:
            lam = choose_lambda(fit, fitl, hold, by_class)
            s = task_scores_lda(fit, fitl, Xt, lam, by_class)
            pred = s.argmax(1)
            # OOD threshold: 1st percentile of the top score on held-out train; below it the input goes to the base.
            sh = task_scores_lda(fit, fitl, Xh, lam, by_class)
            thr = np.percentile(sh.max(1), 1)
            to_base = float((s.max(1) < thr).mean())
            groups = T if not by_class else sum(len(np.unique(l)) for l in fitl)
            label = "LDA task prototypes" if not by_class else "LDA class prototypes → task"
            rows.append((label, nlabel, f"λ={lam}", float((pred == yt).mean()), to_base, groups * (Q.shape[1] + 1) * 4))
            if not by_class and N is None:
                best_per_task = per_task(pred)
                conf = np.zeros((T, T), int)
                np.add.at(conf, (yt, pred), 1)
                held_acc = float((sh.argmax(1) == yh).mean())
    return names, rows, best_per_task, conf, held_acc, len(Xt)


def fmt(tasks_dir):
    names, rows, per, conf, held, n = study(tasks_dir)
    print(f"\n## {tasks_dir}: {len(names)} tasks, {n} test examples\n")
    print("| router | train texts per task | tuned on train | test routing accuracy | OOD → base (test) | size |")
    print("|---|---:|---|---:|---:|---:|")
    for r in rows:
        ood = "—" if r[4] is None else f"{100 * r[4]:.1f} %"
        print(f"| {r[0]} | {r[1]} | {r[2]} | {100 * r[3]:.1f} % | {ood} | {r[5] / 1024:.0f} KB |")
    print(f"\nLDA task prototypes, all train texts: held-out-train accuracy {100 * held:.1f} %; per task (test):\n")
    print("| task | routed to its task | most confused with |")
    print("|---|---:|---|")
    for t, name in enumerate(names):
        c = conf[t].copy(); c[t] = -1
        j = int(c.argmax())
        other = f"{names[j]} ({conf[t, j]})" if conf[t, j] > 0 else "—"
        print(f"| {name} | {100 * per[t]:.1f} % | {other} |")


if __name__ == "__main__":
    dirs = sys.argv[1:] or [os.path.join(ROOT, "data/tasks"), os.path.normpath(os.path.join(ROOT, "../shared/tasks"))]
    for d in dirs:
        fmt(d)

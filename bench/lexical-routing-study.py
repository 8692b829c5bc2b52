#!/usr/bin/env python3
"""Lexical evidence for per-example routing at 8, 14 and 20 tasks (issue 16): multinomial naive Bayes over the base
model's WordPiece token ids and over hashed character n-grams, alone and added to the LDA router's Gaussian
log-likelihood on the base features (layers 3-6, mean-pooled, each at unit length, concatenated; max 48 tokens).

Why: the LDA router's misroutes at 14-20 tasks are mostly between near twins with disjoint label sets (lang-id /
lang-id-b, code-lang / code-lang-b, ...). Mean-pooled features may blur the surface evidence (letter n-grams, code
tokens, length) that tells them apart; that evidence is cheap and closed-form.

Protocol (as bench/class-routing-study.py and bench/metric-routing-study.py): train texts 0..999 per task fit the
routers, the test splits are only scored. Every knob (NB smoothing α, the weight w of the NB log-likelihood, the
weight v of a text-length log-likelihood) is chosen on a tune split of TRAIN: routers fitted on texts 0..799, scored
on 800..999; the test figures refit on 0..999 with the chosen knobs. Knobs are chosen per task set on its own tune
split ("tuned per set") and, to test "any task set without retuning", once on the 8 tasks' tune split and applied
unchanged at 14 and 20 ("knobs of 8"). Figure: share of each task's texts routed to it, mean over tasks.

Scores (all log-likelihoods, equal task priors):
  lda-task   -1/2 Mahalanobis distance to the task mean, shared covariance, shrinkage λ (tswitch route --kind lda)
  lda-class  per (task, class) means, shared covariance; task = log Σ_c π_c N(x; μ_c, Σ) (class-routing-study)
  nb-tok     multinomial NB, per task, over WordPiece ids (base tokenizer, no special tokens), Lidstone α
  nb-tok-cls the same per (task, class), task = log Σ_c π_c P(x | c)
  nb-chr     multinomial NB over character 1-4 grams (case kept, text framed by boundary marks) hashed into 2^B
             buckets; nb-chr-cls per (task, class)
  len        log P(length bin | task): log2 of the character count in 1/3 steps, add-one smoothed histogram
  combo      lda + w · nb / (tokens in the text)^p + v · len  (p = 0: a plain product of experts; p > 0 damps long
             texts' NB sums), optionally + w2 · a second NB (token NB on top of the char NB)

Usage: OMP_NUM_THREADS=1 python3 bench/lexical-routing-study.py [--tasks 8,14,20] [--buckets 18] [--json OUT]
       OMP_NUM_THREADS=1 python3 bench/lexical-routing-study.py --check-sklearn   # NB against scikit-learn's
       OMP_NUM_THREADS=1 python3 bench/lexical-routing-study.py --logreg   # a trained n-gram model instead of NB
Features come from bench/routing-study.py's cache (transformers, bench/out/routing-study); NB needs no model pass.
"""
import argparse, importlib.util, json, os, subprocess, sys, time, unicodedata
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("routing_study", os.path.join(ROOT, "bench/routing-study.py"))
rs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rs)
TASK_ORDER = rs.TASK_ORDER
D = 1536
ALPHAS = [0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
WS = [0.0] + [2.0 ** k for k in range(-6, 9)]
VS = [0.0, 1.0, 4.0, 16.0, 64.0]
PS = [0.0, 0.5, 1.0]                # NB log-likelihood / (tokens in the text)^p: p = 0 the plain product of experts
TWINS = [("lang-id", "lang-id-b"), ("code-lang", "code-lang-b"), ("wn-noun", "wn-noun-b"), ("fortune", "fortune-c"),
         ("deb-lang", "deb-section"), ("unicode-cat", "unicode-script"), ("man-section", "man-pkg"),
         ("perl-module", "py-module"), ("wn-domain", "wn-verb"), ("wn-domain", "wn-noun-b")]


# ---------------------------------------------------------------- sparse bags (no scipy: flat CSR in numpy)

class Bags:
    """Per text: sorted unique ids and their counts, flattened (indptr into ids/counts)."""

    def __init__(self, id_lists):
        ptr, ids, cnt = [0], [], []
        for a in id_lists:
            u, c = np.unique(np.asarray(a, np.int64), return_counts=True)
            ids.append(u)
            cnt.append(c)
            ptr.append(ptr[-1] + len(u))
        self.ptr = np.asarray(ptr, np.int64)
        self.ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        self.cnt = np.concatenate(cnt).astype(np.float32) if cnt else np.zeros(0, np.float32)

    def __len__(self):
        return len(self.ptr) - 1

    def rows(self, sel):
        out = Bags.__new__(Bags)
        parts = [(self.ids[self.ptr[i]:self.ptr[i + 1]], self.cnt[self.ptr[i]:self.ptr[i + 1]]) for i in sel]
        out.ptr = np.cumsum([0] + [len(p[0]) for p in parts]).astype(np.int64)
        out.ids = np.concatenate([p[0] for p in parts])
        out.cnt = np.concatenate([p[1] for p in parts])
        return out


def tokens(texts):
    from tokenizers import Tokenizer
    mp = subprocess.check_output([os.path.join(ROOT, "scripts/model-path")], text=True).strip()
    tok = Tokenizer.from_file(os.path.join(mp, "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return Bags([e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]), tok.get_vocab_size()


P1, P2, MIX = np.uint64(0x100000001B3), np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9)


def char_ngrams(texts, bits, nmax=4):
    """Character 1..nmax-grams of "\\x02" + text + "\\x03" (case kept), a polynomial hash per n, bucketed into 2^bits."""
    out = []
    shift = np.uint64(64 - bits)
    with np.errstate(over="ignore"):
        for t in texts:
            c = np.frombuffer(("\x02" + t + "\x03").encode("utf-32-le"), np.uint32).astype(np.uint64)
            ids = []
            for n in range(1, nmax + 1):
                if len(c) < n:
                    break
                h = np.full(len(c) - n + 1, np.uint64(n) * P2, np.uint64)
                for j in range(n):
                    h = h * P1 + c[j:len(c) - n + 1 + j]
                h ^= h >> np.uint64(31)
                h *= MIX
                ids.append(h >> shift)
            out.append(np.concatenate(ids).astype(np.int64))
    return Bags(out)


def length_bins(texts):
    return np.minimum((np.log2(1 + np.array([len(t) for t in texts])) * 3).astype(np.int64), 29)


# ---------------------------------------------------------------- models

def nb_counts(bags, y, n_classes, vocab):
    """[C, V] float32 token counts per class."""
    cls = np.repeat(y, np.diff(bags.ptr))
    out = np.zeros((n_classes, vocab), np.float32)
    for c in range(n_classes):
        m = cls == c
        out[c] = np.bincount(bags.ids[m], weights=bags.cnt[m], minlength=vocab)
    return out


def nb_loglik(counts, alpha, bags, chunk=256):
    """[N, C] Σ_tokens count · log P(token | c), Lidstone-smoothed over the whole vocabulary/bucket range."""
    logp = (np.log(counts + alpha) - np.log(counts.sum(1, keepdims=True) + alpha * counts.shape[1])).astype(np.float32)
    out = np.empty((len(bags), counts.shape[0]), np.float64)
    for s in range(0, len(bags), chunk):
        e = min(s + chunk, len(bags))
        a, b = bags.ptr[s], bags.ptr[e]
        contrib = logp[:, bags.ids[a:b]] * bags.cnt[a:b]
        starts = bags.ptr[s:e] - a
        nonempty = np.diff(bags.ptr[s:e + 1]) > 0
        r = np.zeros((counts.shape[0], e - s), np.float64)
        if b > a:
            r[:, nonempty] = np.add.reduceat(contrib, starts[nonempty], axis=1)
        out[s:e] = r.T
    return out


def to_tasks(class_scores, owner, log_prior, n):
    """log Σ_c π_c exp(score_c) over each task's classes."""
    z = class_scores + log_prior
    out = np.full((len(z), n), -np.inf)
    for t in range(n):
        zt = z[:, owner == t]
        m = zt.max(1, keepdims=True)
        out[:, t] = (m + np.log(np.exp(zt - m).sum(1, keepdims=True)))[:, 0]
    return out


def lda_scores(x, y, lam, xs):
    m = rs.LDA.__new__(rs.LDA)
    m._fit(x, y, lam)
    return m.scores(xs)


def length_loglik(bins_fit, y, n, bins_score):
    h = np.ones((n, 30))
    np.add.at(h, (y, bins_fit), 1)
    return np.log(h / h.sum(1, keepdims=True))[:, bins_score].T


# ---------------------------------------------------------------- the study

def routed(pred, truth, n):
    return 100 * np.mean([np.mean(pred[truth == i] == i) for i in range(n)])


def score_sets(sel_fit, sel_sc, feats_fit, feats_sc, data, n, args):
    """Every component's [N, n] task scores for fit rows sel_fit and scored rows sel_sc of the first n tasks."""
    y_task, y_cls = data["y_task"][sel_fit], data["y_cls"][sel_fit]
    cls_ids = np.unique(y_cls)
    remap = -np.ones(data["y_cls"].max() + 1, np.int64)
    remap[cls_ids] = np.arange(len(cls_ids))
    yc = remap[y_cls]
    owner = data["cls_owner"][cls_ids]
    prior = np.log(np.bincount(yc) / np.bincount(y_task)[owner])
    cs = lda_scores(feats_fit, yc, args.lam, feats_sc)
    lda_class_pred = cls_ids[cs.argmax(1)]
    out = {"lda-task": lda_scores(feats_fit, y_task, args.lam, feats_sc),
           "lda-class": to_tasks(cs, owner, prior, n),
           "len": length_loglik(data["len"][sel_fit], y_task, n, data["len"][sel_sc])}
    for kind in ("tok", "chr"):
        bags_fit, bags_sc, vocab = data[kind].rows(sel_fit), data[kind].rows(sel_sc), data[kind + "-vocab"]
        ct = nb_counts(bags_fit, yc, len(cls_ids), vocab)
        task_ct = np.stack([ct[owner == t].sum(0) for t in range(n)])
        for a in ALPHAS:
            out[f"nb-{kind}/{a}"] = nb_loglik(task_ct, a, bags_sc)
            out[f"nb-{kind}-cls/{a}"] = to_tasks(nb_loglik(ct, a, bags_sc), owner, prior, n)
        del ct
        cum = np.concatenate([[0.0], np.cumsum(bags_sc.cnt, dtype=np.float64)])
        out[f"{kind}-n"] = np.maximum(np.diff(cum[bags_sc.ptr]), 1.0)
    out["classes"] = len(cls_ids)
    out["class-pred"], out["class-owner"] = lda_class_pred, owner
    return out


def combos():
    """(name, lda, nb, nb2) for every rule; nb None = the LDA alone; nb2 a second NB added on top."""
    rules = [("lda-task", "lda-task", None, None), ("lda-class", "lda-class", None, None)]
    for nb in ("nb-tok", "nb-tok-cls", "nb-chr", "nb-chr-cls"):
        rules.append((nb, None, nb, None))
    for lda in ("lda-task", "lda-class"):
        for nb in ("nb-tok", "nb-tok-cls", "nb-chr", "nb-chr-cls"):
            rules.append((f"{lda} + w·{nb}", lda, nb, None))
    for lda in ("lda-task", "lda-class"):
        rules.append((f"{lda} + w·nb-chr + w2·nb-tok", lda, "nb-chr", "nb-tok"))
    return rules


def evaluate(sc, lda, nb, knobs, extra=None):
    """Task scores' argmax: lda + w · nb / ntokens^p + v · len (+ w2 · a second NB: extra = (nb2, α2, w2))."""
    a, w, v, p = knobs
    s = v * sc["len"]
    if lda:
        s = s + sc[lda]
    if nb:
        s = s + (1.0 if lda is None else w) * sc[f"{nb}/{a}"] / sc[nb.split("-")[1] + "-n"][:, None] ** p
    if extra:
        nb2, a2, w2 = extra
        s = s + w2 * sc[f"{nb2}/{a2}"] / sc[nb2.split("-")[1] + "-n"][:, None] ** p
    return s.argmax(1)


def tune(sc, truth, n, lda, nb, vs=VS):
    """Best (α, w, v, p) on the tune split; ties go to the first in grid order (smallest α, w, v, p)."""
    best, arg = -1.0, None
    for p in (PS if (nb and lda) else [0.0]):
        for a in (ALPHAS if nb else [None]):
            for w in (WS[1:] if (nb and lda) else [1.0]):
                for v in vs:
                    r = routed(evaluate(sc, lda, nb, (a, w, v, p)), truth, n)
                    if r > best + 1e-9:
                        best, arg = r, (a, w, v, p)
    return arg, best


def tune_second(sc, truth, n, lda, nb, knobs, nb2):
    """With the first NB's knobs fixed, the best (α2, w2) of a second NB added on top (w2 = 0 allowed)."""
    best, arg = -1.0, None
    for a2 in ALPHAS:
        for w2 in WS:
            r = routed(evaluate(sc, lda, nb, knobs, (nb2, a2, w2)), truth, n)
            if r > best + 1e-9:
                best, arg = r, (nb2, a2, w2)
    return arg, best


def fmt_knobs(k, lda, nb):
    a, w, v, p = k
    parts = []
    if nb:
        parts.append(f"α {a:g}")
    if nb and lda:
        parts.append(f"w {w:g}")
    parts.append(f"v {v:g}")
    if nb and lda:
        parts.append(f"p {p:g}")
    return ", ".join(parts)


def duplicate_ceiling(test_texts, truth, n):
    """Best routed share any function of the text can reach: texts identical after case folding and whitespace
    collapsing that occur in the test splits of several tasks go to the one task where they weigh most."""
    norm = [" ".join(unicodedata.normalize("NFKC", t).casefold().split()) for t in test_texts]
    size = np.bincount(truth, minlength=n)
    groups = {}
    for s, t in zip(norm, truth):
        groups.setdefault(s, []).append(t)
    got = np.zeros(n)
    multi, texts_multi = 0, 0
    for s, ts in groups.items():
        w = np.zeros(n)
        for t in ts:
            w[t] += 1.0 / size[t]
        if np.count_nonzero(w) > 1:
            multi += 1
            texts_multi += len(ts)
        best = w.argmax()
        got[best] += w[best] * size[best]
    return 100 * np.mean(got / size), multi, texts_multi


def cross_train(test_texts, truth, train_texts, train_truth):
    """Test texts that (normalised) occur in another task's fitting texts."""
    norm = lambda t: " ".join(unicodedata.normalize("NFKC", t).casefold().split())
    owners = {}
    for s, t in zip(train_texts, train_truth):
        owners.setdefault(norm(s), set()).add(t)
    return sum(1 for s, t in zip(test_texts, truth) if owners.get(norm(s), set()) - {t})


def check_sklearn():
    """Cross-check the numpy NB against scikit-learn's MultinomialNB (same counts, α, equal priors) on four twin tasks."""
    from scipy.sparse import csr_matrix
    from sklearn.naive_bayes import MultinomialNB
    texts, y = [], []
    for i, t in enumerate(["lang-id", "lang-id-b", "code-lang", "code-lang-b"]):
        rows = rs.read_jsonl(os.path.join(ROOT, "data/tasks", t, "train.jsonl"))[:1000]
        texts += [r["text"] for r in rows]
        y += [i] * len(rows)
    y = np.array(y)
    fit = np.arange(len(texts)) % 5 != 0
    worst = 0.0
    for name, (bags, v) in (("tok", tokens(texts)), ("chr", (char_ngrams(texts, 16), 2 ** 16))):
        x = csr_matrix((bags.cnt, bags.ids, bags.ptr), shape=(len(texts), v))
        for a in (0.01, 1.0):
            sk = MultinomialNB(alpha=a, force_alpha=True, fit_prior=False).fit(x[fit], y[fit])
            ref = sk.predict_joint_log_proba(x[~fit]) - np.log(0.25)
            ours = nb_loglik(nb_counts(bags.rows(np.flatnonzero(fit)), y[fit], 4, v), a, bags.rows(np.flatnonzero(~fit)))
            rel = np.abs(ours - ref).max() / np.abs(ref).max()
            agree = np.mean(ours.argmax(1) == ref.argmax(1))
            print(f"nb-{name}, α {a:g}: max |ours − sklearn| / max |sklearn| = {rel:.1e}, same argmax {100 * agree:.1f} %")
            worst = max(worst, rel)
            if agree < 1.0 or rel > 1e-5:
                sys.exit("NB disagrees with sklearn")
    print(f"NB matches sklearn's MultinomialNB (worst relative difference {worst:.1e}, float32 tables).")


def logreg_diagnostic(sets, cache, bits):
    """Is NB what limits the lexical evidence? A trained multinomial logistic regression (scikit-learn, L-BFGS) on
    TF-IDF (sublinear tf, idf and l2 from the fitting texts) of the same hashed char n-grams, alone and added to the
    task-label LDA; C and w chosen on the tune split as above. A diagnostic only: a training loop, not a router."""
    from scipy.sparse import csr_matrix
    from sklearn.linear_model import LogisticRegression
    train = {t: rs.read_jsonl(os.path.join(ROOT, "data/tasks", t, "train.jsonl"))[:1000] for t in TASK_ORDER}
    test = {t: rs.read_jsonl(os.path.join(ROOT, "data/tasks", t, "test.jsonl")) for t in TASK_ORDER}
    tr = [r["text"] for t in TASK_ORDER for r in train[t]]
    te = [r["text"] for t in TASK_ORDER for r in test[t]]
    ytr = np.repeat(np.arange(len(TASK_ORDER)), 1000)
    yte = np.concatenate([np.full(len(test[t]), i) for i, t in enumerate(TASK_ORDER)])
    ftr, fte = rs.layers_3_6(tr, cache), rs.layers_3_6(te, cache)
    bags = char_ngrams(tr + te, bits)
    x = csr_matrix((bags.cnt.astype(np.float64), bags.ids, bags.ptr), shape=(len(tr) + len(te), 2 ** bits))
    x.data = 1 + np.log(x.data)
    pos = np.tile(np.arange(1000), len(TASK_ORDER))

    def tfidf(fit_rows, rows):
        df = np.bincount(x[fit_rows].indices, minlength=2 ** bits)
        z = x[rows].multiply(np.log((1 + len(fit_rows)) / (1 + df)) + 1).tocsr()
        return z.multiply(1 / np.sqrt(z.multiply(z).sum(1))).tocsr()

    print("| tasks | char n-gram logistic regression alone | lda-task | lda-task + w · LR log-probability | knobs (tune) |")
    print("|---|---:|---:|---:|---|")
    for n in sets:
        fit = np.flatnonzero((ytr < n) & (pos < 800))
        tun = np.flatnonzero((ytr < n) & (pos >= 800))
        best = (-1.0, None, None)
        lda = lda_scores(ftr[fit], ytr[fit], 0.01, ftr[tun])
        for c in (10.0, 100.0):
            lp = LogisticRegression(C=c, max_iter=300).fit(tfidf(fit, fit), ytr[fit]).predict_log_proba(tfidf(fit, tun))
            for w in [0.0] + [2.0 ** k for k in range(-2, 10)]:
                r = routed((lda + w * lp).argmax(1), ytr[tun], n)
                if r > best[0] + 1e-9:
                    best = (r, c, w)
        _, c, w = best
        fit_all, te_rows = np.flatnonzero(ytr < n), len(tr) + np.flatnonzero(yte < n)
        lp = LogisticRegression(C=c, max_iter=300).fit(tfidf(fit_all, fit_all), ytr[fit_all]).predict_log_proba(
            tfidf(fit_all, te_rows))
        lda = lda_scores(ftr[fit_all], ytr[fit_all], 0.01, fte[yte < n])
        truth = yte[yte < n]
        print(f"| {n} | {routed(lp.argmax(1), truth, n):.1f} % | {routed(lda.argmax(1), truth, n):.1f} % | "
              f"{routed((lda + w * lp).argmax(1), truth, n):.1f} % | C {c:g}, w {w:g} (tune {best[0]:.1f} %) |",
              flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="8,14,20")
    ap.add_argument("--lam", type=float, default=0.01)
    ap.add_argument("--buckets", type=int, default=18, help="char n-gram hash buckets: 2^B")
    ap.add_argument("--cache", default=os.path.join(ROOT, "bench/out/routing-study"))
    ap.add_argument("--json", help="write every figure here too (atomically)")
    ap.add_argument("--check-sklearn", action="store_true", help="only cross-check the NB against scikit-learn")
    ap.add_argument("--logreg", action="store_true", help="only the logistic-regression diagnostic (scikit-learn)")
    args = ap.parse_args()
    if args.check_sklearn:
        return check_sklearn()
    try:
        sets = [int(s) for s in args.tasks.split(",")]
    except ValueError:
        sys.exit(f"--tasks: comma-separated task counts (8,14,20), not {args.tasks!r}")
    if not sets or min(sets) < 2 or max(sets) > len(TASK_ORDER):
        sys.exit(f"--tasks: task counts between 2 and {len(TASK_ORDER)}")
    if not 10 <= args.buckets <= 22:
        sys.exit("--buckets: between 10 and 22 (2^10 .. 2^22 buckets)")
    os.makedirs(args.cache, exist_ok=True)
    if args.logreg:
        return logreg_diagnostic(sets, args.cache, args.buckets)
    t0 = time.time()
    train, test = {}, {}
    for t in TASK_ORDER:
        d = os.path.join(ROOT, "data/tasks", t)
        train[t] = rs.read_jsonl(os.path.join(d, "train.jsonl"))[:1000]
        test[t] = rs.read_jsonl(os.path.join(d, "test.jsonl"))
        if len(train[t]) < 1000:
            sys.exit(f"{t}: {len(train[t])} train texts, the study needs 1,000")
    tr_texts = [r["text"] for t in TASK_ORDER for r in train[t]]
    te_texts = [r["text"] for t in TASK_ORDER for r in test[t]]
    ftr, fte = rs.layers_3_6(tr_texts, args.cache), rs.layers_3_6(te_texts, args.cache)
    n_tr, n_te = len(tr_texts), len(te_texts)
    # One index space: train rows first, then test rows.
    cls = {}
    y_cls = [cls.setdefault((i, r["label"]), len(cls)) for i, t in enumerate(TASK_ORDER) for r in train[t] + test[t]]
    y_cls = np.array(y_cls)
    order_cls = np.concatenate([np.arange(o, o + len(train[t])) for o, t in
                                zip(np.cumsum([0] + [len(train[t]) + len(test[t]) for t in TASK_ORDER]), TASK_ORDER)])
    order_cls_te = np.concatenate([np.arange(o + len(train[t]), o + len(train[t]) + len(test[t])) for o, t in
                                   zip(np.cumsum([0] + [len(train[t]) + len(test[t]) for t in TASK_ORDER]), TASK_ORDER)])
    y_task = np.concatenate([np.full(len(train[t]), i) for i, t in enumerate(TASK_ORDER)] +
                            [np.full(len(test[t]), i) for i, t in enumerate(TASK_ORDER)])
    texts = tr_texts + te_texts
    tok, vocab = tokens(texts)
    data = {"y_task": y_task, "y_cls": np.concatenate([y_cls[order_cls], y_cls[order_cls_te]]),
            "cls_owner": np.array([k[0] for k in sorted(cls, key=cls.get)]),
            "tok": tok, "tok-vocab": vocab, "chr": char_ngrams(texts, args.buckets), "chr-vocab": 2 ** args.buckets,
            "len": length_bins(texts)}
    names = {t: json.load(open(os.path.join(ROOT, "data/tasks", t, "labels.json")))["labels"] for t in TASK_ORDER}
    data["cls_name"] = [f"{TASK_ORDER[k[0]]}:{names[TASK_ORDER[k[0]]][k[1]]}" for k in sorted(cls, key=cls.get)]
    feats = np.concatenate([ftr, fte])
    print(f"features, tokens, n-grams: {time.time() - t0:.0f} s; vocabulary {vocab}, char buckets 2^{args.buckets}; "
          f"λ {args.lam}", flush=True)
    row_task = y_task
    is_train = np.arange(len(texts)) < n_tr
    pos = np.zeros(len(texts), np.int64)  # index within its task's train split
    for i in range(len(TASK_ORDER)):
        m = is_train & (row_task == i)
        pos[m] = np.arange(m.sum())
    rules = combos()
    result = {"date": time.strftime("%Y-%m-%d"), "lam": args.lam, "buckets": args.buckets, "sets": {}}
    knobs8 = {}
    for n in sets:
        in_set = row_task < n
        fit_tune, sc_tune = np.flatnonzero(in_set & is_train & (pos < 800)), np.flatnonzero(in_set & is_train & (pos >= 800))
        fit_all, sc_test = np.flatnonzero(in_set & is_train), np.flatnonzero(in_set & ~is_train)
        s_tune = score_sets(fit_tune, sc_tune, feats[fit_tune], feats[sc_tune], data, n, args)
        s_test = score_sets(fit_all, sc_test, feats[fit_all], feats[sc_test], data, n, args)
        tr_tune, tr_test = row_task[sc_tune], row_task[sc_test]
        res = {"classes": s_test["classes"], "rules": {}}
        for name, lda, nb, nb2 in rules:
            if nb2 is None:
                k, tune_r = tune(s_tune, tr_tune, n, lda, nb)
                k0t, tune0 = tune(s_tune, tr_tune, n, lda, nb, vs=[0.0])
                x, x0 = None, None
            else:  # the one-NB rule's knobs, then the second NB's α2, w2 on top
                base = res["rules"][f"{lda} + w·{nb}"]
                k, k0t = base["knobs"], base["knobs_nolen"]
                x, tune_r = tune_second(s_tune, tr_tune, n, lda, nb, k, nb2)
                x0, tune0 = tune_second(s_tune, tr_tune, n, lda, nb, k0t, nb2)
            entry = {"knobs": k, "extra": x, "tune": tune_r, "test": routed(evaluate(s_test, lda, nb, k, x), tr_test, n),
                     "knobs_nolen": k0t, "extra_nolen": x0, "tune_nolen": tune0,
                     "test_nolen": routed(evaluate(s_test, lda, nb, k0t, x0), tr_test, n)}
            if n == sets[0]:
                knobs8[name] = (k, x)
            entry["knobs_of_first"], entry["extra_of_first"] = knobs8[name]
            entry["test_knobs_of_first"] = routed(evaluate(s_test, lda, nb, *knobs8[name]), tr_test, n)
            entry["tune_knobs_of_first"] = routed(evaluate(s_tune, lda, nb, *knobs8[name]), tr_tune, n)
            res["rules"][name] = entry
        ceil, groups, dup_texts = duplicate_ceiling([texts[i] for i in sc_test], tr_test, n)
        res["ceiling"], res["dup_groups"], res["dup_texts"] = ceil, groups, dup_texts
        res["test_in_other_train"] = cross_train([texts[i] for i in sc_test], tr_test, [texts[i] for i in fit_all],
                                                 row_task[fit_all])
        res["n_test"] = len(sc_test)
        # Per task and twin confusions for the LDA and every combination (test, tuned-per-set knobs).
        preds = {name: evaluate(s_test, lda, nb, res["rules"][name]["knobs"], res["rules"][name]["extra"])
                 for name, lda, nb, _ in rules}
        # Class-level LDA's cross-task confusions: which classes of one task look like which of another.
        true_cls, pred_cls = data["y_cls"][sc_test], s_test["class-pred"]
        owner_all = data["cls_owner"]
        cross = owner_all[true_cls] != owner_all[pred_cls]
        pairs = np.unique(np.stack([true_cls[cross], pred_cls[cross]], 1), axis=0, return_counts=True)
        top = np.argsort(-pairs[1], kind="stable")[:12]
        res["class_confusions"] = [(data["cls_name"][pairs[0][i][0]], data["cls_name"][pairs[0][i][1]], int(pairs[1][i]))
                                   for i in top]
        res["per_task"] = {name: [float(100 * np.mean(p[tr_test == i] == i)) for i in range(n)]
                           for name, p in preds.items()}
        res["confusion"] = {name: np.bincount(tr_test * n + p, minlength=n * n).reshape(n, n).tolist()
                            for name, p in preds.items()}
        res["sizes"] = sizes(n, res["classes"], vocab, 2 ** args.buckets, data, fit_all)
        result["sets"][n] = res
        print_set(n, res, rules, sets[0])
        print(f"({time.time() - t0:.0f} s)", flush=True)
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o))
        os.replace(tmp, args.json)


def sizes(n, classes, vocab, buckets, data, fit_all):
    """Bytes each router needs as a file: dense float32 tables (what a reader would map), plus the nonzero count of
    the NB count tables (a sparse file: 4-byte id + 4-byte count each)."""
    # LDA: the 9,492,906-byte layers-3-6 router file at 8 tasks = 4·(D² + 9·D) + 426; per prototype one D-row and a bias.
    lda = lambda protos: 4 * (D * D + (protos + 1) * D + protos) + 394
    out = {"lda-task": lda(n), "lda-class": lda(classes)}
    for kind, v in (("tok", vocab), ("chr", buckets)):
        b = data[kind].rows(fit_all)
        owner_rows = np.repeat(data["y_task"][fit_all], np.diff(b.ptr))
        cls_rows = np.repeat(data["y_cls"][fit_all], np.diff(b.ptr))
        out[f"nb-{kind}"] = 4 * n * v
        out[f"nb-{kind}-cls"] = 4 * classes * v
        out[f"nb-{kind}-nnz"] = int(len(np.unique(owner_rows * v + b.ids)))
        out[f"nb-{kind}-cls-nnz"] = int(len(np.unique(cls_rows * v + b.ids)))
    return out


def print_set(n, res, rules, first):
    tasks = TASK_ORDER[:n]
    sz = res["sizes"]
    print(f"\n### {n} tasks ({res['classes']} classes, {res['n_test']} test texts)\n")
    print(f"Duplicates: {res['dup_texts']} test texts in {res['dup_groups']} groups occur (case-folded) in the test splits "
          f"of two or more tasks: no function of the text routes more than {res['ceiling']:.1f} %. "
          f"{res['test_in_other_train']} test texts occur in another task's fitting texts.\n")
    print(f"| rule | knobs (tuned per set) | tune | test routed | test, no length term | knobs of {first} tasks | "
          f"test with knobs of {first} | file (dense f32) |")
    print("|---|---|---:|---:|---:|---|---:|---:|")
    for name, lda, nb, nb2 in rules:
        e = res["rules"][name]
        size = (sz[lda] if lda else 0) + (sz[nb] if nb else 0) + (sz[nb2] if nb2 else 0) + 4 * n * 30
        kf = lambda k, x: fmt_knobs(k, lda, nb) + (f", α2 {x[1]:g}, w2 {x[2]:g}" if x else "")
        print(f"| {name} | {kf(e['knobs'], e['extra'])} | {e['tune']:.1f} % | **{e['test']:.1f} %** | "
              f"{e['test_nolen']:.1f} % | {kf(e['knobs_of_first'], e['extra_of_first'])} | "
              f"{e['test_knobs_of_first']:.1f} % | {size / 1e6:.2f} MB |")
    nz = ", ".join(f"{k} {sz[k + '-nnz']:,}" for k in ("nb-tok", "nb-tok-cls", "nb-chr", "nb-chr-cls"))
    print(f"\nNonzero NB counts (a sparse file stores 8 bytes each): {nz}.")
    best = max((r for r in rules if r[1] and r[2]), key=lambda r: res["rules"][r[0]]["tune"])[0]
    print(f"\nBest combination on the tune split: {best}.")
    if n >= 14:
        print(f"\n| task | lda-task | {best} | most confused with (lda-task → {best}) |")
        print("|---|---:|---:|---|")
        for i, t in enumerate(tasks):
            c0, c1 = np.array(res["confusion"]["lda-task"][i]), np.array(res["confusion"][best][i])
            c0[i] = c1[i] = -1
            j0, j1 = c0.argmax(), c1.argmax()
            print(f"| {t} | {res['per_task']['lda-task'][i]:.1f} % | {res['per_task'][best][i]:.1f} % | "
                  f"{tasks[j0]} ({c0[j0]}) → {tasks[j1]} ({c1[j1]}) |")
        print(f"\n| twins | misroutes to each other: lda-task | lda-class | {best} |")
        print("|---|---:|---:|---:|")
        for a, b in TWINS:
            if a in tasks and b in tasks:
                i, j = tasks.index(a), tasks.index(b)
                m = lambda r: res["confusion"][r][i][j] + res["confusion"][r][j][i]
                print(f"| {a} / {b} | {m('lda-task')} | {m('lda-class')} | {m(best)} |")
        tot = lambda r: res["n_test"] - sum(res["confusion"][r][i][i] for i in range(n))
        print(f"\nAll misroutes: lda-task {tot('lda-task')}, lda-class {tot('lda-class')}, {best} {tot(best)}.")
        wn = np.array([t in ("wn-noun", "wn-verb", "wn-domain", "wn-noun-b") for t in tasks])
        for r in ("lda-task", "lda-class", best):
            pt = np.array(res["per_task"][r])
            if wn.any():
                print(f"{r}: the {(~wn).sum()} tasks other than the WordNet gloss tasks {pt[~wn].mean():.1f} %, "
                      f"the {wn.sum()} gloss tasks (wn-noun, -noun-b, -verb, -domain) {pt[wn].mean():.1f} %.")
        print("\nClass-label LDA's largest cross-task class confusions (test): " +
              "; ".join(f"{a} → {b} {c}" for a, b, c in res["class_confusions"]) + ".")


if __name__ == "__main__":
    main()

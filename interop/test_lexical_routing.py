"""Lexical evidence in `tswitch route` (router file version 3): the naive Bayes log-likelihoods `tswitch` computes
equal scikit-learn's MultinomialNB on the same hashed character n-grams (hashed here in plain Python), routing is
argmax(LDA + w·NB/n^p) with the OOD check on the LDA score, near-twin tasks route better with it than without,
and `tswitch eval` says whether it was used."""
import json
import shutil

import numpy as np

from conftest import ROOT
from serve_process import model_path

TINY = ROOT / "Tests/EvaluationTests/Fixtures/roberta-tiny"


def fnv1a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def ngrams(text, buckets=1 << 18, orders=(1, 4)):
    """Character n-grams of U+0002 + text + U+0003 (case kept), FNV-1a 64 of their UTF-8 bytes mod buckets."""
    s = "\x02" + text + "\x03"
    return [fnv1a(s[i:i + n].encode("utf-8")) % buckets
            for i in range(len(s)) for n in range(orders[0], orders[1] + 1) if i + n <= len(s)]


def counts(texts, buckets=1 << 18):
    from scipy.sparse import csr_matrix
    rows, cols = [], []
    for r, t in enumerate(texts):
        g = ngrams(t, buckets)
        rows += [r] * len(g)
        cols += g
    return csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(texts), buckets))


def lines(task, split, n):
    rows = (ROOT / "data/tasks" / task / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    return [json.loads(r)["text"] for r in rows]


def write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def test_naive_bayes_equals_sklearn(tswitch, tmp_path):
    from sklearn.naive_bayes import MultinomialNB

    tasks = ("lang-id", "lang-id-b")
    train = {t: lines(t, "train", 60) for t in tasks}
    test = {t: lines(t, "test", 25) for t in tasks}
    pairs = [f"{t}={write_jsonl(tmp_path / f'{t}.jsonl', train[t])}" for t in tasks]
    router = tmp_path / "r.tsr"
    out = tswitch("route", "--build", router, "--base", TINY, "--per-task", 60, "--lexical-alpha", 0.3,
                  "--lexical-weight", 2, "--lexical-power", 0.5, *pairs).stdout
    assert "lexical evidence (char 1-4-grams, 262144 buckets, α = 0.3, w = 2.0, p = 0.5)" in out
    assert router.read_bytes()[8] == 3
    queries = [f"{t}={write_jsonl(tmp_path / f'{t}-test.jsonl', test[t])}" for t in tasks]
    report = json.loads(tswitch("route", router, "--base", TINY, *queries, "--json", "--scores").stdout)
    assert report["lexical"] is True

    nb = MultinomialNB(alpha=0.3, force_alpha=True, fit_prior=False)
    nb.fit(counts(train[tasks[0]] + train[tasks[1]]), [0] * 60 + [1] * 60)
    texts = test[tasks[0]] + test[tasks[1]]
    expected = counts(texts) @ nb.feature_log_prob_.T
    got = np.array(report["lexical_log_likelihoods"])
    assert got.shape == expected.shape == (50, 2)
    np.testing.assert_allclose(got, expected, rtol=2e-6)
    # Routing: argmax of LDA + w·NB/n^p per text, unless the LDA score alone says out of distribution.
    lda = np.array(report["lda_scores"])
    n = np.array([len(ngrams(t)) for t in texts], dtype=np.float64)
    combined = lda + 2 * expected / n[:, None] ** 0.5
    for i, route in enumerate(report["routes"]):
        if route != "base":
            assert route == tasks[int(np.argmax(combined[i]))], i
    # The same router without texts routes on the LDA alone and says so.
    feats = tmp_path / "f.safetensors"
    tswitch("embed", TINY, "--input", tmp_path / "lang-id-test.jsonl", "--output", feats, "--normalize",
            "--layers", "1-2", "--max-length", 128)
    plain = json.loads(tswitch("route", router, feats, "--json").stdout)
    assert plain["lexical"] is False
    with_texts = json.loads(tswitch("route", router, feats, "--texts", tmp_path / "lang-id-test.jsonl",
                                    "--json").stdout)
    assert with_texts["lexical"] is True and with_texts["routes"] == report["routes"][:25]
    # One text short of the features: a clear error.
    write_jsonl(tmp_path / "short.jsonl", test[tasks[0]][:24])
    bad = tswitch("route", router, feats, "--texts", tmp_path / "short.jsonl", check=False)
    assert bad.returncode != 0 and "24 texts for the 25 feature rows" in bad.stderr


def test_twins_route_better_with_lexical_evidence(tswitch, tmp_path):
    """lang-id / lang-id-b (single words of the same languages, disjoint label sets): the default router from
    their train texts routes their test texts better than the same LDA without the lexical part."""
    tasks = ("lang-id", "lang-id-b")
    pairs = [f"{t}={ROOT / 'data/tasks' / t / 'train.jsonl'}" for t in tasks]
    tests = [f"{t}={ROOT / 'data/tasks' / t / 'test.jsonl'}" for t in tasks]
    shares = {}
    for name, extra in (("lexical", []), ("plain", ["--no-lexical"])):
        r = tmp_path / f"{name}.tsr"
        tswitch("route", "--build", r, "--base", model_path(), "--per-task", 400, *extra, *pairs)
        assert r.read_bytes()[8] == (3 if name == "lexical" else 2)
        report = json.loads(tswitch("route", r, "--base", model_path(), *tests, "--json").stdout)
        assert report["lexical"] is (name == "lexical")
        shares[name] = report["mean_task_accuracy"]
    assert shares["lexical"] > shares["plain"] + 0.02, shares


def test_eval_reports_lexical_routing(tswitch, tmp_path):
    tasks = ("wn-verb", "lang-id")
    data, heads = tmp_path / "data", tmp_path / "heads"
    pairs = []
    for t in tasks:
        (data / t).mkdir(parents=True)
        rows = (ROOT / "data/tasks" / t / "test.jsonl").read_text(encoding="utf-8").splitlines()[:10]
        (data / t / "test.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
        shutil.copytree(ROOT / "data/heads" / t, heads / t)
        pairs.append(f"{t}={ROOT / 'data/tasks' / t / 'train.jsonl'}")
    router = tmp_path / "r.tsr"
    tswitch("route", "--build", router, "--base", model_path(), "--per-task", 60, "--lexical-weight", 4, *pairs)
    packs = [str(ROOT / "packs" / f"{t}.tsw") for t in tasks]
    report = json.loads(tswitch("eval", model_path(), "--head", heads, "--data", data, "--pack", *packs,
                                "--auto-switch", router, "--route-mode", "per-example", "--json").stdout)
    assert report["routing_lexical"] is True
    routed = json.loads(tswitch("route", router, "--base", model_path(),
                                *[f"{t}={data / t / 'test.jsonl'}" for t in tasks], "--json").stdout)["routes"]
    for i, t in enumerate(tasks):
        mine = routed[10 * i:10 * (i + 1)]
        assert report["tasks"][t]["routing"]["routes"] == {d: mine.count(d) for d in set(mine)}
    every = sorted(str(p) for p in (ROOT / "packs").glob("*.tsw"))  # the shipped router routes to all 8 tasks
    old = json.loads(tswitch("eval", model_path(), "--head", heads, "--data", data, "--pack", *every,
                             "--auto-switch", ROOT / "packs/router.tsr", "--route-mode", "per-example",
                             "--json").stdout)
    assert old["routing_lexical"] is False

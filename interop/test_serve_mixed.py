"""`tswitch serve` with mixed traffic, from the outside: the real binary with the shipped LDA router file
(packs/router.tsr), concurrent httpx clients of several tasks and `auto` while a pack is added, replaced and removed;
every answer checked against sentence-transformers on `tswitch apply`'s output (the fine-tune; it normalizes, so
ours is compared at unit length) and the routing
against `tswitch route` on `tswitch embed --normalize`."""
import json
import shutil
import threading

import httpx
import numpy as np
import pytest

from conftest import ROOT, train_slices, tswitch_path
from serve_process import model_path, start_serve
from test_serve import texts_of

TASKS = ("wn-verb", "lang-id", "unicode-cat")
CHURN = "fortune"
TOKEN = "interop-mixed"
MAX_LENGTH = 32


@pytest.fixture(scope="module")
def lda_server(tmp_path_factory):
    packs = tmp_path_factory.mktemp("packs-lda")
    for t in TASKS:
        shutil.copy(ROOT / "packs" / f"{t}.tsw", packs)
    shutil.copy(ROOT / "packs" / "router.tsr", packs)  # found in --packs without --router
    url, proc = start_serve(tswitch_path(), packs, "--max-length", MAX_LENGTH, "--truncate", "--max-wait-ms", 20,
                            env={"TSWITCH_ADMIN_TOKEN": TOKEN})
    yield url
    proc.terminate()
    assert proc.wait(timeout=60) == 0


@pytest.fixture(scope="module")
def finetunes(tmp_path_factory, tswitch):
    """sentence-transformers over `tswitch apply BASE packs/TASK.tsw` for each task (and the base itself)."""
    from sentence_transformers import SentenceTransformer

    out = tmp_path_factory.mktemp("finetunes")
    models = {"base": SentenceTransformer(str(model_path()), device="cpu")}
    for t in (*TASKS, CHURN):
        tswitch("apply", model_path(), ROOT / "packs" / f"{t}.tsw", "-o", out / t)
        models[t] = SentenceTransformer(str(out / t), device="cpu")
    for m in models.values():
        m.max_seq_length = MAX_LENGTH
    return models


def unit(v):
    """Ours scaled to unit length: the shipped sentence-transformers model ends in a Normalize module."""
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_lda_routing_matches_tswitch_route(lda_server, tswitch, tmp_path):
    texts = texts_of("wn-verb", 3) + texts_of("lang-id", 3) + texts_of("unicode-cat", 3) + texts_of("wn-noun", 2) + ["zzzz"]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    tswitch("embed", model_path(), "--input", tmp_path / "in.jsonl", "--output", tmp_path / "base.safetensors",
            "--max-length", MAX_LENGTH, "--normalize")
    routed = tswitch("route", ROOT / "packs" / "router.tsr", tmp_path / "base.safetensors").stdout
    expected = []
    for line in routed.splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[0].isdigit():
            task = parts[1].split(" ")[0]
            expected.append(task if task in TASKS else "base")  # not loaded, or out of distribution: the base
    assert len(expected) == len(texts)
    assert expected[-1] == "base" and {"wn-verb", "lang-id", "unicode-cat"} <= set(expected)
    r = httpx.post(lda_server + "/v1/embeddings", json={"model": "auto", "input": texts}, timeout=120)
    assert r.status_code == 200, r.text
    assert [d["task"] for d in r.json()["data"]] == expected


def test_concurrent_mixed_clients_while_packs_change(lda_server, finetunes):
    work = [(t, s) for t in TASKS for s in texts_of(t, 4)] + [("base", s) for s in texts_of("wn-noun", 2)]
    reference = {(t, s): finetunes[t].encode([s], convert_to_numpy=True)[0] for t, s in work}
    churn_text = texts_of(CHURN, 1)[0]
    churn_reference = finetunes[CHURN].encode([churn_text], convert_to_numpy=True)[0]
    failures, answered = [], []
    stop = threading.Event()

    def client(c):
        with httpx.Client(base_url=lda_server, timeout=120) as h:
            n = 0
            while not stop.is_set() or n < 4:
                t, s = work[(c * 5 + n) % len(work)]
                n += 1
                r = h.post("/v1/embeddings", json={"model": t, "input": [s]})
                if r.status_code != 200:
                    failures.append(f"{t}: {r.status_code} {r.text[:200]}")
                    continue
                d = r.json()["data"][0]
                off = float(np.max(np.abs(unit(d["embedding"]) - reference[(t, s)])))
                if d["task"] != t or off > 1e-4:
                    failures.append(f"{t}: answered as {d['task']}, off by {off:.2e} from sentence-transformers")
                answered.append(t)

    def admin():
        auth = {"authorization": f"Bearer {TOKEN}"}
        churn = (ROOT / "packs" / f"{CHURN}.tsw").read_bytes()
        replaced = (ROOT / "packs" / "lang-id.tsw").read_bytes()
        try:
            with httpx.Client(base_url=lda_server, timeout=120) as h:
                for cycle in range(3):
                    steps = [("PUT", h.put(f"/v1/packs/{CHURN}", content=churn, headers=auth), 201)]
                    r = h.post("/v1/embeddings", json={"model": CHURN, "input": [churn_text]})
                    ok = r.status_code == 200 and float(np.max(np.abs(
                        unit(r.json()["data"][0]["embedding"]) - churn_reference))) <= 1e-4
                    if not ok:
                        failures.append(f"{CHURN} after PUT ({cycle}): {r.status_code} {r.text[:200]}")
                    steps.append(("replace lang-id", h.put("/v1/packs/lang-id", content=replaced, headers=auth), 200))
                    steps.append(("DELETE", h.delete(f"/v1/packs/{CHURN}", headers=auth), 200))
                    for what, resp, want in steps:
                        if resp.status_code != want:
                            failures.append(f"{what} ({cycle}): {resp.status_code} {resp.text[:200]}")
        finally:
            stop.set()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(6)] + [threading.Thread(target=admin)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not failures, "\n".join(failures[:20])
    assert len(answered) >= 24 and set(answered) == {*TASKS, "base"}


def test_layer_feature_router_served_as_tswitch_route_routes(tswitch, tmp_path, torch_one_thread):
    """A router on base layers 3 and 6 (`route --build --layers`): the server routes each `auto` text where
    `tswitch route` sends transformers' features of the same layers (unit blocks, concatenated, x 1/sqrt 2), and
    answers a routed text with its pack's embedding."""
    from layer_features import layer_features, routed

    train = [f"{t}={f}" for t, f in train_slices(tmp_path, TASKS)]
    router = tmp_path / "r.tsr"
    built = tswitch("route", "--build", router, "--base", model_path(), "--layers", "3,6", "--shrinkage", "0.3",
                    "--no-lexical", *train).stdout
    assert "768 features (layers 3,6)" in built
    texts = texts_of("wn-verb", 3) + texts_of("lang-id", 3) + texts_of("unicode-cat", 3) + texts_of("wn-noun", 2)
    features = layer_features(torch_one_thread, texts, (3, 6), MAX_LENGTH)
    expected = routed(tswitch, router, features, tmp_path / "f.safetensors")
    assert len(expected) == len(texts) and {"wn-verb", "lang-id"} <= set(expected)
    packs = tmp_path / "packs"
    packs.mkdir()
    for t in TASKS[:2]:  # unicode-cat not loaded: its texts get the base
        shutil.copy(ROOT / "packs" / f"{t}.tsw", packs)
    url, proc = start_serve(tswitch_path(), packs, "--router", router, "--max-length", MAX_LENGTH, "--truncate")
    try:
        r = httpx.post(url + "/v1/embeddings", json={"model": "auto", "input": texts}, timeout=120)
        assert r.status_code == 200, r.text
        served = r.json()["data"]
        assert [d["task"] for d in served] == [t if t in TASKS[:2] else "base" for t in expected]
        for d, s in zip(served, texts):
            alone = httpx.post(url + "/v1/embeddings", json={"model": d["task"], "input": [s]}, timeout=120)
            assert np.max(np.abs(np.array(d["embedding"]) - np.array(alone.json()["data"][0]["embedding"]))) <= 1e-5
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0


def test_lexical_router_served_as_tswitch_route_routes_texts(tswitch, tmp_path):
    """A router with lexical evidence (version 3): the server routes each `auto` text where `tswitch route ROUTER
    --base BASE TEXTS.jsonl` sends it, the texts' n-grams included."""
    train = [f"{t}={f}" for t, f in train_slices(tmp_path, TASKS)]
    router = tmp_path / "r.tsr"
    tswitch("route", "--build", router, "--base", model_path(), "--lexical-weight", "8", *train)
    assert router.read_bytes()[8] == 3
    texts = texts_of("wn-verb", 3) + texts_of("lang-id", 3) + texts_of("unicode-cat", 3) + texts_of("wn-noun", 2)
    src = tmp_path / "texts.jsonl"
    src.write_text("".join(json.dumps({"text": s}) + "\n" for s in texts), encoding="utf-8")
    report = json.loads(tswitch("route", router, "--base", model_path(), src, "--json").stdout)
    assert report["lexical"] is True
    packs = tmp_path / "packs"
    packs.mkdir()
    for t in TASKS[:2]:  # the other tasks not loaded: their texts get the base
        shutil.copy(ROOT / "packs" / f"{t}.tsw", packs)
    url, proc = start_serve(tswitch_path(), packs, "--router", router, "--max-length", MAX_LENGTH, "--truncate")
    try:
        r = httpx.post(url + "/v1/embeddings", json={"model": "auto", "input": texts}, timeout=120)
        assert r.status_code == 200, r.text
        assert [d["task"] for d in r.json()["data"]] == [t if t in TASKS[:2] else "base" for t in report["routes"]]
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0


def test_default_router_is_the_best_measured_one_in_the_folder(tswitch, tmp_path, torch_one_thread):
    """With router-layers.tsr and router.tsr both in --packs and no --router, the server routes `auto` with the
    layer router (the best measured per example), as `tswitch route packs/router-layers.tsr` routes transformers'
    layer 3-6 features of the same texts."""
    from layer_features import layer_features, routed

    packs = tmp_path / "packs"
    packs.mkdir()
    for t in TASKS:
        shutil.copy(ROOT / "packs" / f"{t}.tsw", packs)
    for name in ["router.tsr", "router-layers.tsr", "queries.safetensors"]:
        shutil.copy(ROOT / "packs" / name, packs)
    texts = texts_of("wn-verb", 3) + texts_of("lang-id", 3) + texts_of("unicode-cat", 3) + texts_of("wn-noun", 2)
    features = layer_features(torch_one_thread, texts, (3, 4, 5, 6), MAX_LENGTH)
    expected = routed(tswitch, ROOT / "packs" / "router-layers.tsr", features, tmp_path / "f.safetensors")
    url, proc = start_serve(tswitch_path(), packs, "--max-length", MAX_LENGTH, "--truncate")
    try:
        ready = proc.stdout.readline()
        assert "auto via" in ready and ready.rstrip().rstrip(")").endswith("router-layers.tsr"), ready
        r = httpx.post(url + "/v1/embeddings", json={"model": "auto", "input": texts}, timeout=120)
        assert r.status_code == 200, r.text
        assert [d["task"] for d in r.json()["data"]] == [t if t in TASKS else "base" for t in expected]
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0

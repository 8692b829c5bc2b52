"""`tswitch serve` from the outside: the real binary on a loopback port, spoken to with httpx and the `openai`
client; each task's embeddings against `tswitch embed` on `tswitch apply`'s output; the error answers; SIGTERM
drains and exits 0."""
import json
import shutil
import signal
import threading
import time

import httpx
import numpy as np
import pytest
from safetensors import safe_open

from conftest import ROOT, tswitch_path
from serve_process import model_path, start_serve

TASKS = ("wn-verb", "lang-id")
TOKEN = "interop-secret"


def texts_of(task, n):
    lines = (ROOT / "data" / "tasks" / task / "test.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(l)["text"] for l in lines[:n]]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module, with two of the shipped packs and the shipped router."""
    packs = tmp_path_factory.mktemp("packs")
    for t in TASKS:
        shutil.copy(ROOT / "packs" / f"{t}.tsw", packs)
    shutil.copy(ROOT / "packs" / "queries.safetensors", packs)
    url, proc = start_serve(tswitch_path(), packs, "--max-inputs", 8, "--max-body", 4096, "--max-length", 32,
                            env={"TSWITCH_ADMIN_TOKEN": TOKEN})
    yield url, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def embed_reference(tswitch, tmp_path, task, texts):
    """`tswitch apply` the pack, then `tswitch embed` the texts with the switched model."""
    tswitch("apply", model_path(), ROOT / "packs" / f"{task}.tsw", "-o", tmp_path / task)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    tswitch("embed", tmp_path / task, "--input", tmp_path / "in.jsonl", "--output", tmp_path / "e.safetensors",
            "--max-length", 32)
    with safe_open(str(tmp_path / "e.safetensors"), "np") as f:
        return f.get_tensor("embeddings")


def test_openai_client_embeddings_match_tswitch_embed(server, tswitch, tmp_path):
    from openai import OpenAI

    url, _ = server
    client = OpenAI(base_url=url + "/v1", api_key="x")
    texts = texts_of("wn-verb", 4)
    result = client.embeddings.create(model="wn-verb", input=texts)
    assert result.model == "wn-verb" and result.object == "list"
    assert [d.index for d in result.data] == list(range(len(texts)))
    assert result.usage.prompt_tokens == result.usage.total_tokens > 0
    ours = np.array([d.embedding for d in result.data], dtype=np.float32)
    reference = embed_reference(tswitch, tmp_path, "wn-verb", texts)
    assert ours.shape == reference.shape == (len(texts), 384)
    assert np.max(np.abs(ours - reference)) < 1e-5

    # The same through httpx, float format, with the task field; and the other task in one client session.
    with httpx.Client(base_url=url, timeout=60) as h:
        r = h.post("/v1/embeddings", json={"model": "lang-id", "input": texts_of("lang-id", 2)})
        assert r.status_code == 200
        body = r.json()
        assert [d["task"] for d in body["data"]] == ["lang-id", "lang-id"]
        lang = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert np.max(np.abs(lang - embed_reference(tswitch, tmp_path, "lang-id", texts_of("lang-id", 2)))) < 1e-5


def test_classify_models_metrics(server):
    url, _ = server
    with httpx.Client(base_url=url, timeout=60) as h:
        r = h.post("/v1/classify", json={"task": "lang-id", "input": texts_of("lang-id", 3), "scores": True})
        assert r.status_code == 200
        for d in r.json()["data"]:
            assert d["task"] == "lang-id" and isinstance(d["label"], str) and 0 < d["score"] <= 1
            assert abs(sum(s["score"] for s in d["scores"]) - 1) < 1e-4
        auto = h.post("/v1/embeddings", json={"model": "auto", "input": texts_of("lang-id", 2) + texts_of("wn-verb", 2)})
        assert auto.status_code == 200
        assert all(d["task"] in ("base", *TASKS) for d in auto.json()["data"])
        models = h.get("/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["base", "lang-id", "wn-verb"]
        assert h.get("/health").status_code == 200
        metrics = h.get("/metrics").text
        assert 'tswitch_http_requests_total{endpoint="/v1/classify",status="200"}' in metrics
        assert "tswitch_loaded_packs 2" in metrics


def error_of(r, status, code):
    assert r.status_code == status, r.text
    e = r.json()["error"]
    assert e["code"] == code and e["message"] and e["type"]
    return e["message"]


def test_bad_input_gets_json_errors_and_the_server_keeps_serving(server):
    url, _ = server
    with httpx.Client(base_url=url, timeout=60) as h:
        post = lambda body: h.post("/v1/embeddings", content=body, headers={"content-type": "application/json"})
        error_of(post(b'{"model": "wn-verb", "input": '), 400, "invalid_json")
        error_of(h.post("/v1/embeddings", json={"model": "wn-verb", "input": 7}), 400, "invalid_json")
        error_of(h.post("/v1/embeddings", json={"model": "wn-verb", "input": []}), 400, "invalid_input")
        error_of(h.post("/v1/embeddings", json={"model": "wn-verb", "input": ["a"] * 9}), 400, "invalid_input")
        assert "--truncate" in error_of(
            h.post("/v1/embeddings", json={"model": "wn-verb", "input": " ".join(["word"] * 60)}), 400, "text_too_long")
        error_of(h.post("/v1/embeddings", json={"model": "wn-verb", "input": "a " * 3000}), 413, "body_too_large")
        assert "lang-id, wn-verb" in error_of(h.post("/v1/embeddings", json={"model": "fortune", "input": "x"}), 404,
                                             "model_not_found")
        pack = (ROOT / "packs" / "fortune.tsw").read_bytes()
        error_of(h.put("/v1/packs/fortune", content=pack, headers={"authorization": "Bearer wrong"}), 401, "unauthorized")
        broken = bytearray(pack)
        broken[len(broken) // 2] ^= 0xFF
        assert "corrupt" in error_of(
            h.put("/v1/packs/fortune", content=bytes(broken), headers={"authorization": f"Bearer {TOKEN}"}), 400,
            "pack_refused")
        admin = {"authorization": f"Bearer {TOKEN}"}
        assert h.put("/v1/packs/fortune", content=pack, headers=admin).status_code == 201
        assert h.post("/v1/embeddings", json={"model": "fortune", "input": "x"}).status_code == 200
        assert h.delete("/v1/packs/fortune", headers=admin).status_code == 200
        error_of(h.post("/v1/embeddings", json={"model": "fortune", "input": "x"}), 404, "model_not_found")
        assert h.post("/v1/embeddings", json={"model": "wn-verb", "input": "still serving"}).status_code == 200


def queued_texts(url):
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("tswitch_queued_texts "):
            return float(line.split()[1])
    return 0.0


def test_sigterm_drains_and_exits_zero(server):
    url, proc = server
    answered = {}

    def slow_request():
        r = httpx.post(url + "/v1/embeddings", json={"model": "wn-verb", "input": texts_of("wn-verb", 8)}, timeout=60)
        answered["status"] = r.status_code

    # The signal must come while a request is admitted and unanswered (the queued-texts gauge says so); on a busy
    # machine a request may be answered before the poll sees it, then another is sent.
    for _ in range(20):
        answered.clear()
        t = threading.Thread(target=slow_request)
        t.start()
        while t.is_alive() and queued_texts(url) == 0:
            time.sleep(0.005)
        if t.is_alive():
            break
        t.join()
    else:
        raise AssertionError("no request was seen in flight in 20 tries")
    proc.send_signal(signal.SIGTERM)
    t.join(60)
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    assert answered.get("status") == 200

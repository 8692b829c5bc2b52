"""Evaluation interoperability: `tswitch embed` against sentence-transformers and transformers' BertModel,
`tswitch eval` against the same head applied in PyTorch, and one-line errors on bad input."""
import json
import pathlib
import subprocess

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from conftest import ROOT

TASKS = ROOT / "data" / "tasks"


def model_path() -> pathlib.Path:
    return pathlib.Path(subprocess.check_output([str(ROOT / "scripts/model-path")], text=True).strip())


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def read_jsonl(path, limit=None):
    rows = [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
    return rows[:limit] if limit else rows


def pooled_reference(torch, texts, max_length):
    """Masked mean of BertModel's last hidden state, computed by transformers."""
    from transformers import AutoTokenizer, BertModel

    tok = AutoTokenizer.from_pretrained(str(model_path()))
    model = BertModel.from_pretrained(str(model_path())).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 32):
            enc = tok(texts[i:i + 32], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            out.append(((h * m).sum(1) / m.sum(1)).numpy())
    return np.concatenate(out)


def relative_errors(a, b):
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


def test_embed_matches_sentence_transformers(tswitch, tmp_path, torch_one_thread):
    from sentence_transformers import SentenceTransformer

    texts = [r["text"] for r in read_jsonl(TASKS / "fortune" / "test.jsonl", 40)] + ["", "Crème brûlée 日本 😀"]
    write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts])
    tswitch("embed", model_path(), "--input", tmp_path / "in.jsonl", "--output", tmp_path / "e.safetensors",
            "--normalize", "--max-length", 256, "--batch", 8)
    with safe_open(str(tmp_path / "e.safetensors"), "np") as f:
        assert list(f.keys()) == ["embeddings"]
        ours = f.get_tensor("embeddings")
    assert ours.dtype == np.float32 and ours.shape == (len(texts), 384)
    ref = SentenceTransformer(str(model_path()), device="cpu").encode(texts, convert_to_numpy=True)
    assert relative_errors(ours, ref).max() < 1e-4


def test_embed_unnormalized_is_the_masked_mean(tswitch, tmp_path, torch_one_thread):
    texts = [r["text"] for r in read_jsonl(TASKS / "code-lang" / "test.jsonl", 24)]
    write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts])
    tswitch("embed", model_path(), "--input", tmp_path / "in.jsonl", "--output", tmp_path / "e.safetensors",
            "--max-length", 16)
    with safe_open(str(tmp_path / "e.safetensors"), "np") as f:
        ours = f.get_tensor("embeddings")
    ref = pooled_reference(torch_one_thread, texts, 16)
    assert relative_errors(ours, ref).max() < 1e-4
    assert np.abs(np.linalg.norm(ours, axis=1) - 1).max() > 0.1  # not normalized


def make_head(path, classes, seed):
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    save_file({"weight": rng.standard_normal((classes, 384)).astype(np.float32),
               "bias": rng.standard_normal(classes).astype(np.float32)}, str(path / "head.safetensors"))


def reference_accuracy(torch, head_file, rows, max_length):
    with safe_open(str(head_file), "np") as f:
        w, b = f.get_tensor("weight"), f.get_tensor("bias")
    feats = pooled_reference(torch, [r["text"] for r in rows], max_length)
    pred = (feats @ w.T + b).argmax(1)
    return float((pred == np.array([r["label"] for r in rows])).mean())


def test_eval_accuracy_equals_pytorch_with_the_same_head(tswitch, tmp_path, torch_one_thread):
    rows = read_jsonl(TASKS / "man-section" / "test.jsonl", 120)
    write_jsonl(tmp_path / "test.jsonl", rows)
    make_head(tmp_path / "head", 5, seed=3)
    out = tswitch("eval", model_path(), "--head", tmp_path / "head" / "head.safetensors", "--data",
                  tmp_path / "test.jsonl", "--json")
    got = json.loads(out.stdout)
    assert got["n"] == 120
    want = reference_accuracy(torch_one_thread, tmp_path / "head" / "head.safetensors", rows, 48)
    assert got["accuracy"] == pytest.approx(want, abs=1.5 / 120)  # at most one near-tie may flip


def test_eval_folder_of_tasks_prints_each_task_and_the_mean(tswitch, tmp_path, torch_one_thread):
    accs = {}
    for i, (task, classes) in enumerate([("lang-id", 5), ("wn-verb", 10)]):
        rows = read_jsonl(TASKS / task / "test.jsonl", 60)
        (tmp_path / "data" / task).mkdir(parents=True)
        write_jsonl(tmp_path / "data" / task / "test.jsonl", rows)
        make_head(tmp_path / "heads" / task, classes, seed=10 + i)
        accs[task] = reference_accuracy(torch_one_thread, tmp_path / "heads" / task / "head.safetensors", rows, 48)
    got = json.loads(tswitch("eval", model_path(), "--head", tmp_path / "heads", "--data", tmp_path / "data",
                             "--json").stdout)
    assert set(got["tasks"]) == set(accs)
    for task, want in accs.items():
        assert got["tasks"][task]["n"] == 60
        assert got["tasks"][task]["accuracy"] == pytest.approx(want, abs=1.5 / 60)
    assert got["mean_accuracy"] == pytest.approx(np.mean([got["tasks"][t]["accuracy"] for t in accs]))
    text = tswitch("eval", model_path(), "--head", tmp_path / "heads", "--data", tmp_path / "data").stdout
    assert "lang-id" in text and "wn-verb" in text and "mean" in text


def test_bad_inputs_fail_with_one_line_errors(tswitch, tmp_path):
    write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok", "label": 0}, {"label": 1}])
    make_head(tmp_path / "head", 5, seed=1)
    out = tswitch("eval", model_path(), "--head", tmp_path / "head" / "head.safetensors", "--data",
                  tmp_path / "bad.jsonl", check=False)
    assert out.returncode != 0
    assert "line 2" in out.stderr and "text" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    write_jsonl(tmp_path / "ok.jsonl", [{"text": "ok", "label": 7}])
    out = tswitch("eval", model_path(), "--head", tmp_path / "head" / "head.safetensors", "--data",
                  tmp_path / "ok.jsonl", check=False)
    assert out.returncode != 0 and "label" in out.stderr
    out = tswitch("embed", tmp_path, "--input", tmp_path / "ok.jsonl", "--output", tmp_path / "o.safetensors",
                  check=False)
    assert out.returncode != 0 and str(tmp_path) in out.stderr
    assert not (tmp_path / "o.safetensors").exists()

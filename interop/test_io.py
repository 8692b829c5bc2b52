"""Checkpoint I/O interoperability: files `tswitch` writes load in safetensors, numpy and transformers with the
values torch computes; files Python writes are read by `tswitch`; bad files fail with a one-line error."""
import json
import pathlib
import subprocess

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file as save_numpy

from conftest import ROOT

FIXTURES = ROOT / "Tests/CheckpointIOTests/Fixtures"


def load_all(folder: pathlib.Path, framework="pt") -> dict:
    """Every tensor of a model folder (single file or shards), through the reference reader only."""
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework=framework) as st:
            for k in st.keys():
                assert k not in out, f"{k} in two shards"
                out[k] = st.get_tensor(k)
    return out


def model_path() -> pathlib.Path:
    return pathlib.Path(subprocess.check_output([str(ROOT / "scripts/model-path")], text=True).strip())


@pytest.mark.parametrize("dtype,torch_name", [("bf16", "bfloat16"), ("f16", "float16"), ("f32", "float32")])
def test_convert_writes_what_torch_would(tswitch, torch_one_thread, tmp_path, dtype, torch_name):
    torch = torch_one_thread
    src = FIXTURES / "models/bert-f32"
    out = tmp_path / "out"
    tswitch("convert", src, out, "--dtype", dtype, "--max-shard-size", "4KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(out.glob("*.safetensors"))
    assert len(shards) > 1 and set(index["weight_map"].values()) == {s.name for s in shards}
    original = load_all(src)
    written = load_all(out)
    assert written.keys() == original.keys()
    for name, t in original.items():
        want = t.to(getattr(torch, torch_name))
        assert written[name].dtype == want.dtype, name
        assert torch.equal(written[name].view(-1).view(torch.int16 if want.element_size() == 2 else torch.int32),
                           want.view(-1).view(torch.int16 if want.element_size() == 2 else torch.int32)), name
    # The index names each tensor's real shard and its total is the data size.
    for name, shard in index["weight_map"].items():
        with safe_open(str(out / shard), framework="pt") as st:
            assert name in st.keys()
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in written.values())
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == torch_name


def test_numpy_reads_our_bf16_exactly_as_ml_dtypes_rounds(tswitch, tmp_path):
    """F32 -> BF16 by tswitch equals ml_dtypes' round-to-nearest-even on random and special values."""
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.standard_normal(100_003).astype(np.float32) * 3,
                             np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-40, 3.4e38, 65520.0], np.float32)])
    src = tmp_path / "in.safetensors"
    save_numpy({"v": values, "m": values[:64].reshape(8, 8).copy()}, str(src))
    for dtype, ref in [("bf16", ml_dtypes.bfloat16), ("f16", np.float16)]:
        out = tmp_path / f"out-{dtype}"
        tswitch("convert", src, out, "--dtype", dtype)
        with safe_open(str(out / "model.safetensors"), framework="numpy") as st:
            got = st.get_tensor("v")
            assert got.dtype == np.dtype(ref)
            with np.errstate(all="ignore"):
                want = values.astype(ref)
            assert np.array_equal(got.view(np.uint16), want.view(np.uint16)), dtype
            assert st.get_tensor("m").shape == (8, 8)


def test_transformers_loads_converted_llama_with_identical_logits(tswitch, torch_one_thread, tmp_path):
    """BF16 sharded -> F32 single file: widening is exact, so the logits equal the original's `.float()` model."""
    torch = torch_one_thread
    from transformers import AutoModelForCausalLM

    src = FIXTURES / "models/llama-bf16-sharded"
    out = tmp_path / "llama-f32"
    tswitch("convert", src, out, "--dtype", "f32")
    assert (out / "model.safetensors").exists() and not (out / "model.safetensors.index.json").exists()
    ids = torch.tensor([[1, 5, 9, 33, 2, 60]])
    original = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    ours = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        assert torch.equal(original(ids).logits, ours(ids).logits)


def test_transformers_loads_converted_real_minilm(tswitch, torch_one_thread, tmp_path):
    """The real all-MiniLM-L6-v2, F32 -> BF16 in 30 MB shards, loads in transformers (model and tokenizer) with
    outputs equal to torch's own BF16 cast of the original."""
    torch = torch_one_thread
    from transformers import AutoModel, AutoTokenizer

    src = model_path()
    out = tmp_path / "minilm-bf16"
    tswitch("convert", src, out, "--dtype", "bf16", "--max-shard-size", "30MB")
    assert len(list(out.glob("model-*.safetensors"))) >= 2
    tok = AutoTokenizer.from_pretrained(out)
    batch = tok(["TaskSwitch reads checkpoints.", "A second, longer sentence about task vectors."],
                padding=True, return_tensors="pt")
    want_model = AutoModel.from_pretrained(src).to(torch.bfloat16).eval()
    ours = AutoModel.from_pretrained(out, dtype=torch.bfloat16).eval()
    for (n1, p1), (n2, p2) in zip(want_model.state_dict().items(), ours.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    with torch.no_grad():
        assert torch.equal(want_model(**batch).last_hidden_state, ours(**batch).last_hidden_state)


def test_inspect_reads_python_files(tswitch):
    for rel in ["models/mixed.safetensors", "models/llama-bf16-sharded", "models/bert-f16"]:
        path = FIXTURES / rel
        report = json.loads(tswitch("inspect", path, "--json").stdout)
        tensors = load_all(path) if path.is_dir() else load_all_file(path)
        assert {t["name"] for t in report["tensors"]} == set(tensors)
        for t in report["tensors"]:
            assert t["shape"] == list(tensors[t["name"]].shape)
        assert report["tensor_count"] == len(tensors)
        assert report["parameters"] == sum(t.numel() for t in tensors.values())
        assert report["bytes"] == sum(t.numel() * t.element_size() for t in tensors.values())
    summary = tswitch("inspect", FIXTURES / "models/llama-bf16-sharded", "--summary").stdout
    assert summary.startswith("6 file(s), 21 tensors") and "BF16" in summary


def load_all_file(path: pathlib.Path) -> dict:
    with safe_open(str(path), framework="pt") as st:
        return {k: st.get_tensor(k) for k in st.keys()}


@pytest.mark.parametrize("case", ["offsets_overlap", "invalid_utf8", "header_length_huge", "empty", "wrong_byte_span"])
def test_bad_file_is_a_one_line_error(tswitch, case):
    path = FIXTURES / f"malformed/files/{case}.safetensors"
    proc = tswitch("inspect", path, check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], proc.stderr
    assert proc.stdout == ""


def test_diff_matches_numpy(tswitch, tmp_path):
    """`tswitch diff --json` against the same statistics computed with numpy (sorted |tau|)."""
    rng = np.random.default_rng(9)
    base = {"a": rng.standard_normal((64, 80)).astype(np.float32), "b": rng.standard_normal(1001).astype(np.float32)}
    ft = {k: v.copy() for k, v in base.items()}
    ft["a"] += (rng.standard_normal(ft["a"].shape) * (rng.random(ft["a"].shape) < 0.05)).astype(np.float32)
    ft["b"] += (rng.standard_normal(1001) * 1e-3).astype(np.float32)
    save_numpy(base, str(tmp_path / "base.safetensors"))
    save_numpy(ft, str(tmp_path / "ft.safetensors"))
    report = json.loads(tswitch("diff", tmp_path / "base.safetensors", tmp_path / "ft.safetensors", "--json").stdout)
    by_name = {t["name"]: t for t in report["tensors"]}
    top_total = {p: 0.0 for p in (1, 10, 30)}
    l1_total = 0.0
    for name in base:
        tau = np.abs(ft[name].astype(np.float64) - base[name].astype(np.float64)).astype(np.float32).ravel()
        srt = np.sort(tau.astype(np.float64))[::-1]
        got = by_name[name]
        assert got["l2_norm"] == pytest.approx(np.sqrt((srt**2).sum()), rel=1e-6)
        assert got["max_abs"] == srt[0]
        assert got["zero_fraction"] == pytest.approx((tau == 0).mean())
        for p in (1, 10, 30):
            k = max(1, int(np.ceil(p / 100 * tau.size)))
            assert got["top_share"][f"top{p}"] == pytest.approx(srt[:k].sum() / srt.sum(), rel=1e-6)
            top_total[p] += srt[:k].sum()
        l1_total += srt.sum()
    for p in (1, 10, 30):
        assert report["summary"]["top_share"][f"top{p}"] == pytest.approx(top_total[p] / l1_total, rel=1e-6)
    text = tswitch("diff", tmp_path / "base.safetensors", tmp_path / "ft.safetensors", "--top", "1").stdout.splitlines()
    assert text[1].startswith("a ") and text[2] == "" and text[3].startswith("2 float tensors")
    # Mismatched models are a one-line error.
    save_numpy({"a": base["a"]}, str(tmp_path / "partial.safetensors"))
    proc = tswitch("diff", tmp_path / "base.safetensors", tmp_path / "partial.safetensors", check=False)
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1 and "'b'" in proc.stderr


def test_sentence_transformers_loads_resharded_minilm(tswitch, torch_one_thread, tmp_path):
    """Re-sharding the real model without changing dtype keeps the sentence-transformers layout (modules.json,
    1_Pooling, tokenizer) and gives identical embeddings."""
    from sentence_transformers import SentenceTransformer

    src = model_path()
    out = tmp_path / "minilm-sharded"
    tswitch("convert", src, out, "--max-shard-size", "20MB")
    assert (out / "1_Pooling/config.json").exists() and (out / "modules.json").exists()
    texts = ["Checkpoints are streamed tensor by tensor.", "Une phrase en français."]
    want = SentenceTransformer(str(src), device="cpu").encode(texts, convert_to_numpy=True)
    got = SentenceTransformer(str(out), device="cpu").encode(texts, convert_to_numpy=True)
    assert np.array_equal(want, got)

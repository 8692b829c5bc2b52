"""Switch packs (T-Switch and random-mask) end to end: `tswitch pack/apply/analyze/route` against NumPy, transformers and scikit-learn.

The fine-tune is genuine but tiny: a few steps of full fine-tuning of all-MiniLM-L6-v2 on code-lang (1 thread).
"""
import importlib.util
import json
import math
import os
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import ROOT

spec = importlib.util.spec_from_file_location("switch_reference", ROOT / "scripts" / "fixtures" / "switch_reference.py")
ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)
spec = importlib.util.spec_from_file_location("random_mask", ROOT / "scripts" / "fixtures" / "random_mask.py")
rmask = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rmask)


@pytest.fixture(scope="module")
def base_path():
    return subprocess.check_output([str(ROOT / "scripts" / "model-path")], text=True).strip()


@pytest.fixture(scope="module")
def finetune(tmp_path_factory, base_path, torch_one_thread):
    """Eight AdamW steps on code-lang; saved as a Hugging Face folder with the base's tensor names."""
    torch = torch_one_thread
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(base_path)
    model = AutoModel.from_pretrained(base_path)
    rows = [json.loads(l) for l in open(ROOT / "data" / "tasks" / "code-lang" / "train.jsonl")][:64]
    head = torch.nn.Linear(384, 5)
    opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=1e-4)
    model.train()
    for step in range(8):
        batch = rows[step * 8:(step + 1) * 8]
        enc = tok([r["text"] for r in batch], padding=True, truncation=True, max_length=32, return_tensors="pt")
        h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        loss = torch.nn.functional.cross_entropy(head((h * m).sum(1) / m.sum(1)), torch.tensor([r["label"] for r in batch]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = tmp_path_factory.mktemp("ft") / "code-lang"
    model.save_pretrained(out, safe_serialization=True)
    save_file({"classifier.weight": head.weight.detach().numpy().copy(), "classifier.bias": head.bias.detach().numpy().copy()},
              str(out / "head.safetensors"))
    return out


def tensors(folder):
    return load_file(str(os.path.join(folder, "model.safetensors")))


def expected_model(base, packs):
    """NumPy: θ + Σ w·λ·mask·sign, packs = [(fine-tune tensors, drop, weight)], float32 in pack order."""
    out = {k: v.copy() for k, v in base.items()}
    for ft, drop, w in packs:
        for name, b in base.items():
            if b.dtype != np.float32 or name not in ft:
                continue
            tau = (ft[name] - b).astype(np.float32)
            if not tau.any():
                continue
            pos, neg, lam = ref.p_discard(tau, drop)
            if len(pos) + len(neg) == 0:
                continue
            c = np.float32(w) * np.float32(lam)
            flat = out[name].reshape(-1)
            flat[pos] = flat[pos] + c
            flat[neg] = flat[neg] - c
    return out


def test_pack_and_apply_match_numpy_bit_for_bit(tswitch, tmp_path, base_path, finetune):
    pack = tmp_path / "code.tsw"
    info = json.loads(tswitch("pack", base_path, finetune, "-o", pack, "--drop", "0.7", "--head",
                              finetune / "head.safetensors", "--labels", ROOT / "data/tasks/code-lang/labels.json",
                              "--json").stdout)
    assert info["task"] == "code-lang" and info["tensors"] > 90
    assert info["bits_per_parameter"] < 1.1 * info["entropy_floor_bits_per_parameter"]
    out = tmp_path / "model"
    tswitch("apply", base_path, f"{pack}:0.5", "-o", out)
    got = tensors(out)
    base = tensors(base_path)
    want = expected_model(base, [(tensors(finetune), 0.7, 0.5)])
    assert set(got) == set(base)
    for name in base:
        assert got[name].dtype == want[name].dtype
        assert np.array_equal(got[name].view(np.uint8), want[name].view(np.uint8)), name
    head = load_file(str(out / "head.safetensors"))
    assert np.array_equal(head["classifier.weight"], load_file(str(finetune / "head.safetensors"))["classifier.weight"])
    assert json.load(open(out / "labels.json"))["labels"][0] == "c"

    # transformers loads the written folder and runs it.
    from transformers import AutoModel, AutoTokenizer
    import torch
    m = AutoModel.from_pretrained(str(out))
    enc = AutoTokenizer.from_pretrained(str(out))(["int main(void) { return 0; }"], return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(m(**enc).last_hidden_state).all()


def test_weighted_packs_and_bf16_output(tswitch, tmp_path, base_path, finetune):
    a = tmp_path / "a.tsw"
    b = tmp_path / "b.tsw"
    tswitch("pack", base_path, finetune, "-o", a, "--drop", "0.9")
    tswitch("pack", base_path, finetune, "-o", b, "--drop", "0.5", "--task", "other")
    out = tmp_path / "mix"
    tswitch("apply", base_path, f"{a}:1.5", f"{b}:-0.25", "-o", out)
    base = tensors(base_path)
    ft = tensors(finetune)
    want = expected_model(base, [(ft, 0.9, 1.5), (ft, 0.5, -0.25)])
    got = tensors(out)
    for name in base:
        assert np.array_equal(got[name].view(np.uint8), want[name].view(np.uint8)), name
    out16 = tmp_path / "mix16"
    tswitch("apply", base_path, a, "-o", out16, "--dtype", "bf16")
    import ml_dtypes
    g16 = tensors(out16)
    w1 = expected_model(base, [(ft, 0.9, 1.0)])
    name = "encoder.layer.0.attention.self.query.weight"
    assert g16[name].dtype == ml_dtypes.bfloat16
    assert np.array_equal(g16[name].view(np.uint16), w1[name].astype(ml_dtypes.bfloat16).view(np.uint16))


def test_random_mask_pack_mixed_with_t_switch_matches_numpy(tswitch, tmp_path, base_path, finetune):
    """A random-mask pack (f32 values) after a T-Switch pack: the mask from the numpy reference of the spec."""
    r = tmp_path / "r.tsw"
    t = tmp_path / "t.tsw"
    info = json.loads(tswitch("pack", base_path, finetune, "-o", r, "--kind", "random-mask", "--drop", "0.99",
                              "--seed", "7", "--values", "f32", "--json").stdout)
    assert info["kind"] == "random-mask" and info["tensors_stored_f32"] == 0
    assert r.read_bytes()[8] == 2  # format version 2: older readers refuse it
    tswitch("pack", base_path, finetune, "-o", t, "--drop", "0.7")
    assert t.read_bytes()[8] == 1
    out = tmp_path / "mix"
    tswitch("apply", base_path, t, f"{r}:0.5", "-o", out)
    base = tensors(base_path)
    ft = tensors(finetune)
    want = expected_model(base, [(ft, 0.7, 1.0)])
    c = np.float32(0.5) * np.float32(1 / (1 - 0.99))
    for name, b in base.items():
        if b.dtype != np.float32 or name not in ft:
            continue
        tau = (ft[name] - b).astype(np.float32).reshape(-1)
        pos = np.array(rmask.positions(tau.size, 0.99, rmask.tensor_seed(7, name)), dtype=np.int64)
        pos = pos[tau[pos] != 0]
        flat = want[name].reshape(-1)
        flat[pos] = flat[pos] + c * tau[pos]
    got = tensors(out)
    for name in base:
        assert np.array_equal(got[name].view(np.uint8), want[name].view(np.uint8)), name


def test_bad_inputs_fail_cleanly_and_write_nothing(tswitch, tmp_path, base_path, finetune):
    pack = tmp_path / "p.tsw"
    tswitch("pack", base_path, finetune, "-o", pack)
    data = pack.read_bytes()

    def fails(args, needle):
        out = tmp_path / "never"
        proc = tswitch(*args, "-o", out, check=False)
        assert proc.returncode != 0
        first = proc.stderr.strip().splitlines()[0]
        assert first.startswith("Error: ") and needle in first, proc.stderr
        assert not out.exists()

    corrupt = tmp_path / "corrupt.tsw"
    corrupt.write_bytes(data[:200] + bytes([data[200] ^ 0x10]) + data[201:])
    fails(["apply", base_path, corrupt], "corrupt")
    truncated = tmp_path / "truncated.tsw"
    truncated.write_bytes(data[: len(data) // 2])
    fails(["apply", base_path, truncated], "truncated")
    fails(["apply", finetune, pack], "fingerprint")  # the fine-tune is another base
    fails(["pack", base_path, finetune, "--drop", "1.0"], "--drop")
    fails(["pack", base_path, finetune, "--drop", "-0.1"], "--drop")
    fails(["pack", base_path, base_path], "empty")
    # A fine-tune with a reshaped tensor.
    odd = tmp_path / "odd"
    odd.mkdir()
    t = tensors(finetune)
    t["encoder.layer.0.attention.self.query.weight"] = np.ascontiguousarray(t["encoder.layer.0.attention.self.query.weight"][:100])
    save_file(t, str(odd / "model.safetensors"))
    fails(["pack", base_path, odd], "shape")


def test_analyze_pulse_and_plot(tswitch, tmp_path, base_path, finetune):
    svg = tmp_path / "pulse.svg"
    out = json.loads(tswitch("analyze", base_path, finetune, "--plot", svg, "--json").stdout)
    pts = out["points"]
    assert pts[0]["drop_ratio"] == 0 and abs(pts[0]["mass"]["discard-low"] - 1) < 1e-9
    for p in pts:
        low, high, rnd = (p["mass"][k] for k in ("discard-low", "discard-high", "random"))
        assert low >= rnd - 1e-9 and rnd >= high - 0.02
        assert p["energy"]["discard-low"] >= p["mass"]["discard-low"] - 1e-9  # large entries carry more energy
    # Discard-low at α = 0.7 from NumPy, over all float tensors.
    base, ft = tensors(base_path), tensors(finetune)
    kept = total = 0.0
    for name, b in base.items():
        if b.dtype != np.float32 or name not in ft:
            continue
        tau = (ft[name] - b).astype(np.float64).reshape(-1)
        for v in (tau[tau > 0], -tau[tau < 0]):
            v = np.sort(v)[::-1]
            kept += v[: int(len(v) * (1 - 0.7))].sum()
            total += v.sum()
    p7 = next(p for p in pts if abs(p["drop_ratio"] - 0.7) < 1e-9)
    assert math.isclose(p7["mass"]["discard-low"], kept / total, rel_tol=1e-9)
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg") and len(root.findall("{http://www.w3.org/2000/svg}polyline")) == 6


def test_route_matches_sklearn(tswitch):
    fx = ROOT / "Tests" / "TaskSwitchesTests" / "Fixtures" / "route"
    ref_shares = json.load(open(fx / "reference.json"))
    for distance in ("euclidean", "cosine"):
        out = json.loads(tswitch("route", fx / "queries.safetensors", fx / "test.safetensors", "--k", "5",
                                 "--distance", distance, "--mode", "per-example", "--json").stdout)
        assert np.allclose(np.array(out["weights"]), np.array(ref_shares["shares"][distance]), atol=1e-12)
        labels = load_file(str(fx / "test.safetensors"))["labels"]
        acc = np.mean(np.argmax(np.array(ref_shares["shares"][distance]), axis=1) == labels)
        assert abs(out["accuracy"] - acc) < 1e-12


def test_route_features_from_the_swift_encoder(tswitch, tmp_path, base_path):
    """`tswitch embed` per task -> `route --build` -> `route`: the whole Auto-Switch chain without Python features."""
    files = {}
    for task in ("code-lang", "lang-id"):
        rows = [json.loads(l) for l in open(ROOT / "data" / "tasks" / task / "train.jsonl")][:30]
        for split, part in (("q", rows[:20]), ("t", rows[20:])):
            src = tmp_path / f"{split}-{task}.jsonl"
            src.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in part))
            tswitch("embed", base_path, "--input", src, "--output", tmp_path / f"{split}-{task}.safetensors")
            files[split, task] = tmp_path / f"{split}-{task}.safetensors"
    for split in ("q", "t"):
        tswitch("route", "--build", tmp_path / f"{split}.safetensors",
                *(f"{t}={files[split, t]}" for t in ("code-lang", "lang-id")))
    built = load_file(str(tmp_path / "q.safetensors"))
    assert built["features"].shape == (40, 384) and list(built["labels"]) == [0] * 20 + [1] * 20
    out = json.loads(tswitch("route", tmp_path / "q.safetensors", tmp_path / "t.safetensors", "--k", "5",
                             "--mode", "per-example", "--json").stdout)
    # Same shares as scikit-learn's cosine k-NN on the same features.
    from sklearn.neighbors import KNeighborsClassifier
    test = load_file(str(tmp_path / "t.safetensors"))
    knn = KNeighborsClassifier(n_neighbors=5, algorithm="brute", metric="cosine").fit(built["features"], built["labels"])
    assert np.allclose(np.array(out["weights"]), knn.predict_proba(test["features"]), atol=1e-12)


def test_lda_router_file_routes_as_numpy_lda(tswitch, tmp_path, base_path):
    """`route --build R.tsr` (the per-example LDA router) then `route R.tsr`: every routed example takes numpy's
    LDA task (shared covariance shrunk by λ, centred on the mean of all rows), and the file refuses another base."""
    tasks = ("code-lang", "lang-id", "wn-verb")
    files = {}
    for task in tasks:
        rows = [json.loads(l) for l in open(ROOT / "data" / "tasks" / task / "train.jsonl")][:60]
        for split, part in (("q", rows[:40]), ("t", rows[40:])):
            src = tmp_path / f"{split}-{task}.jsonl"
            src.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in part))
            tswitch("embed", base_path, "--input", src, "--output", tmp_path / f"{split}-{task}.safetensors",
                    "--normalize")
            files[split, task] = tmp_path / f"{split}-{task}.safetensors"
    tswitch("route", "--build", tmp_path / "t.safetensors", *(f"{t}={files['t', t]}" for t in tasks))
    lam = 0.1
    tswitch("route", "--build", tmp_path / "r.tsr", "--shrinkage", str(lam), "--base", base_path,
            *(f"{t}={files['q', t]}" for t in tasks))
    out = json.loads(tswitch("route", tmp_path / "r.tsr", tmp_path / "t.safetensors", "--json").stdout)
    assert out["kind"] == "lda" and out["tasks"] == list(tasks)
    # numpy LDA on the same features
    x = np.concatenate([load_file(str(files["q", t]))["embeddings"] for t in tasks]).astype(np.float64)
    y = np.repeat(np.arange(len(tasks)), 40)
    c = x.mean(0)
    mus = np.stack([x[y == k].mean(0) for k in range(len(tasks))])
    resid = x - mus[y]
    s = resid.T @ resid / (len(x) - len(tasks))
    d = x.shape[1]
    sigma = (1 - lam) * s + lam * np.trace(s) / d * np.eye(d)
    w = np.linalg.solve(sigma, (mus - c).T).T
    b = -0.5 * np.einsum("kd,kd->k", mus - c, w)
    test = load_file(str(tmp_path / "t.safetensors"))
    want = ((test["features"].astype(np.float64) - c) @ w.T + b).argmax(1)
    routed = [(i, r) for i, r in enumerate(out["routes"]) if r != "base"]
    assert len(routed) >= 0.8 * len(out["routes"])
    assert all(tasks[want[i]] == r for i, r in routed)
    assert out["accuracy"] > 0.8
    # A corrupted file is refused with a message naming it (every bit flip: LDARouterTests).
    raw = bytearray((tmp_path / "r.tsr").read_bytes())
    raw[len(raw) // 2] ^= 0x10
    (tmp_path / "bad.tsr").write_bytes(bytes(raw))
    bad = tswitch("route", tmp_path / "bad.tsr", tmp_path / "t.safetensors", check=False)
    assert bad.returncode != 0 and "bad.tsr" in bad.stderr

"""`tswitch moe` against mergekit-moe 0.1.5's committed outputs (scripts/fixtures/moe_fixtures.py).

Each fixture config is built by tswitch, loaded with transformers (MixtralForCausalLM / Qwen2MoeForCausalLM) and
run forward; every tensor of the loaded model is compared with the model transformers loads from mergekit's output:
copied tensors (attention, norms, embeddings, head, every expert) bit for bit, router rows within float32 rounding
(cheap_embed: sums of the same embedding rows; random: torch's Box-Muller evaluated with other log/sin/cos), and
the logits on the same ids.
"""
import hashlib
import json
import pathlib
import shutil

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIX = ROOT / "Tests" / "MergeEngineTests" / "Fixtures" / "moe"
NAMES = sorted(p.stem for p in FIX.glob("*.yml"))
# Loaded-config keys that record the writer, not the model.
CONFIG_IGNORED = {"transformers_version", "_name_or_path"}


def digest(t):
    import torch

    t = t.detach().contiguous().cpu()
    raw = t.view(torch.int16) if t.dtype in (torch.bfloat16, torch.float16) else t
    return hashlib.sha256(raw.numpy().tobytes()).hexdigest()


def is_router(name):
    return name.endswith("mlp.gate.weight") or name.endswith("shared_expert_gate.weight")


@pytest.fixture(scope="module")
def built(tswitch, tmp_path_factory):
    out = {}
    root = tmp_path_factory.mktemp("moe")
    for name in NAMES:
        first = (FIX / f"{name}.yml").read_text().splitlines()[0]
        args = first.split("# args:", 1)[1].split() if first.startswith("# args:") else []
        target = root / name
        tswitch("moe", FIX / f"{name}.yml", target, *args)
        out[name] = target
    return out


@pytest.mark.parametrize("name", NAMES)
def test_transformers_loads_and_matches_mergekit(name, built, torch_one_thread, tmp_path):
    torch = torch_one_thread
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    expected = json.loads((FIX / "expected" / f"{name}.json").read_text())
    reference = load_file(FIX / "expected" / f"{name}.safetensors")
    path = built[name]
    # mergekit computes hidden-state routers in bfloat16, tswitch in float32 (test_hidden_routers_match_float32_reference
    # checks ours against transformers in float32); measured here: rows within 2.3e-3, cosine ≥ 0.99998.
    hidden = "gate_mode: hidden" in (FIX / f"{name}.yml").read_text()

    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == [expected["model_class"]]
    # Both config.json files as transformers reads them (its config classes fill defaults and derive fields).
    ours = AutoConfig.from_pretrained(path).to_dict()
    theirs_dir = tmp_path / "mergekit-config"
    theirs_dir.mkdir()
    (theirs_dir / "config.json").write_text(json.dumps(expected["config"]))
    theirs = AutoConfig.from_pretrained(theirs_dir).to_dict()
    for key in sorted(set(ours) | set(theirs)):
        if key in CONFIG_IGNORED:
            continue
        assert ours.get(key) == theirs.get(key), (
            f"{name}: config '{key}' is {ours.get(key)!r}; mergekit's is {theirs.get(key)!r}")

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    assert type(model).__name__ == expected["model_class"]
    state = model.state_dict()
    assert sorted(state) == sorted(expected["tensors"]), f"{name}: loaded tensors differ from mergekit's"
    routers = 0
    for key, (dtype, shape, sha) in expected["tensors"].items():
        t = state[key]
        assert str(t.dtype).replace("torch.", "") == dtype and list(t.shape) == shape, key
        if is_router(key):
            routers += 1
            ref = reference[key].to(t.dtype).float()
            tol = 4e-3 if hidden else 1e-6 if t.dtype == torch.float32 else 2 ** -7
            assert torch.allclose(t.float(), ref, rtol=tol, atol=tol), (
                f"{name}: router {key} differs from mergekit's by {(t.float() - ref).abs().max().item()}")
        else:
            assert digest(t) == sha, f"{name}: tensor {key} differs from mergekit's"
    assert routers >= 2

    with torch.no_grad():
        logits = model(torch.tensor(expected["input_ids"])).logits.float()
    ref = reference["logits"]
    assert logits.shape == ref.shape
    assert torch.isfinite(logits).all()
    # Measured: at most 6.1e-7 (F32 routers a few ulps apart); 0 in BF16, whose rounding absorbs them here.
    tol = 2e-2 if hidden or config.get("torch_dtype", config.get("dtype")) != "float32" else 1e-5
    assert torch.allclose(logits, ref, atol=tol, rtol=tol), (
        f"{name}: logits differ from mergekit's model by {(logits - ref).abs().max().item()}")


def test_mixtral_file_layout(built):
    """tswitch writes Mixtral's checkpoint layout (what transformers 4 and 5, vLLM and llama.cpp's converter read);
    mergekit 0.1.5 writes transformers 5's fused one. Same values: each fused tensor is the stack of ours."""
    import torch
    from safetensors.torch import load_file

    ours = load_file(built["mixtral_cheap_embed"] / "model.safetensors")
    expected = json.loads((FIX / "expected" / "mixtral_cheap_embed.json").read_text())
    assert "model.layers.0.block_sparse_moe.gate.weight" in ours
    assert not any(".mlp." in k for k in ours)
    for layer in range(2):
        p = f"model.layers.{layer}"
        gate_up = torch.stack([torch.cat([ours[f"{p}.block_sparse_moe.experts.{e}.w1.weight"],
                                          ours[f"{p}.block_sparse_moe.experts.{e}.w3.weight"]]) for e in range(3)])
        down = torch.stack([ours[f"{p}.block_sparse_moe.experts.{e}.w2.weight"] for e in range(3)])
        assert digest(gate_up) == expected["tensors"][f"{p}.mlp.experts.gate_up_proj"][2]
        assert digest(down) == expected["tensors"][f"{p}.mlp.experts.down_proj"][2]


def test_default_seed_is_zero(tswitch, built, tmp_path):
    """Without --random-seed the routers are mergekit-moe's with --random-seed 0, the same file every run."""
    from safetensors.torch import load_file

    out = tmp_path / "default"
    tswitch("moe", FIX / "mixtral_random_bf16.yml", out)
    assert (out / "model.safetensors").read_bytes() == (built["mixtral_random_bf16"] / "model.safetensors").read_bytes()
    seeded = tmp_path / "seed1"
    tswitch("moe", FIX / "mixtral_random_bf16.yml", seeded, "--random-seed", "1")
    a = load_file(out / "model.safetensors")["model.layers.0.block_sparse_moe.gate.weight"]
    b = load_file(seeded / "model.safetensors")["model.layers.0.block_sparse_moe.gate.weight"]
    assert not (a == b).all()


def test_atomic_and_validated(tswitch, tmp_path):
    """A bad input fails before anything appears at the target, with an error naming the file and what is wrong."""
    cfg = tmp_path / "bad.yml"
    cfg.write_text(f"base_model: {FIX / 'models/base'}\ngate_mode: random\nexperts:\n"
                   f"  - source_model: {FIX / 'models/code'}\n  - source_model: {tmp_path / 'missing'}\n")
    out = tmp_path / "out"
    proc = tswitch("moe", cfg, out, check=False)
    assert proc.returncode != 0
    assert "missing" in proc.stderr and str(cfg) in proc.stderr
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())
    # A base the hidden-state forward pass does not compute (another activation) is refused by name.
    base = tmp_path / "gelu-base"
    shutil.copytree(FIX / "models/base", base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "hidden_act": "gelu"}))
    cfg.write_text(f"base_model: {base}\ngate_mode: hidden\nexperts:\n"
                   f"  - source_model: {FIX / 'models/code'}\n    positive_prompts: [a]\n"
                   f"  - source_model: {FIX / 'models/math'}\n    positive_prompts: [b]\n")
    proc = tswitch("moe", cfg, out, check=False)
    assert proc.returncode != 0 and "hidden_act 'gelu'" in proc.stderr and str(base) in proc.stderr
    assert not out.exists()


def test_sharded_output_loads(tswitch, built, tmp_path, torch_one_thread):
    """--out-shard-size splits the mixture into shards with an index; transformers loads the same tensors."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "sharded"
    tswitch("moe", FIX / "qwen_cheap_embed.yml", out, "--out-shard-size", "100KB")
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 3 and (out / "model.safetensors.index.json").exists()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    whole = AutoModelForCausalLM.from_pretrained(built["qwen_cheap_embed"]).state_dict()
    split = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert sorted(whole) == sorted(split)
    assert all(torch_one_thread.equal(whole[k], split[k]) for k in whole)


@pytest.mark.parametrize("name", ["mixtral_hidden", "mixtral_hidden_avg"])
def test_hidden_routers_match_float32_reference(name, built, torch_one_thread):
    """`hidden` / `hidden_avg` routers against mergekit's formula (`get_hidden_states` over hidden_states[:-1]) run
    in transformers in float32, one unpadded prompt at a time: per layer the mean over an expert's positive
    prompts of the last token's (mean token's) state, minus the negative prompts', normalised."""
    torch = torch_one_thread
    import yaml
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = yaml.safe_load((FIX / f"{name}.yml").read_text())
    base = FIX / config["base_model"]
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()

    def states(prompts):
        rows = []
        for p in prompts:
            ids = tok([tok.bos_token + p], add_special_tokens=False, return_tensors="pt")
            with torch.no_grad():
                hs = torch.stack(model(**ids, output_hidden_states=True).hidden_states[:-1])[:, 0]
            rows.append(hs.mean(dim=1) if config["gate_mode"] == "hidden_avg" else hs[:, -1])
        return torch.stack(rows).mean(dim=0)  # (layers, hidden)

    gates = []
    for e in config["experts"]:
        v = states(e["positive_prompts"])
        if e.get("negative_prompts"):
            v = v - states(e["negative_prompts"])
        gates.append(v / v.norm(dim=-1, keepdim=True).clamp(min=1e-8))
    want = torch.stack(gates).permute(1, 0, 2)  # (layers, experts, hidden)
    ours = load_file(built[name] / "model.safetensors")
    for layer in range(want.shape[0]):
        got = ours[f"model.layers.{layer}.block_sparse_moe.gate.weight"].float()
        assert torch.allclose(got, want[layer], atol=2e-5, rtol=1e-4), (
            f"{name}: layer {layer} router differs from the float32 reference by {(got - want[layer]).abs().max()}")


def test_sentencepiece_base_routers_match_float32_reference(tswitch, torch_one_thread, tmp_path):
    """A Llama 2 / Mistral-style base (SentencePiece vocabulary with byte fallback, Metaspace; linear rope scaling):
    the GGUF fixture converted, two experts made from it with seeded noise on their MLPs. cheap_embed and hidden
    routers equal mergekit's formulas computed with transformers' tokenizer and model in float32 (so the prompts'
    token ids are transformers' too)."""
    torch = torch_one_thread
    from safetensors.numpy import load_file as load_np, save_file as save_np
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tmp_path / "base"
    tswitch("convert", ROOT / "Tests/CheckpointIOTests/Fixtures/gguf/tiny_llama_spm.gguf", base)
    rng = np.random.default_rng(5)
    for name in ["story", "code"]:
        shutil.copytree(base, tmp_path / name)
        weights = load_np(str(base / "model.safetensors"))
        for k, v in weights.items():
            if ".mlp." in k:
                weights[k] = (v + rng.standard_normal(v.shape).astype(np.float32) * 0.05).astype(np.float32)
        save_np(weights, str(tmp_path / name / "model.safetensors"), metadata={"format": "pt"})
    experts = [("story", ["once upon a time there was a dragon", "the king and queen"], []),
               ("code", ["def add(a, b): return a + b"], ["naïve café ☃"])]
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    embed = model.model.embed_tokens.weight.detach()

    def ids(p):
        return tok([tok.bos_token + p], add_special_tokens=False, return_tensors="pt")

    def cheap(prompts):
        v = sum(embed[ids(p)["input_ids"][0]].sum(0) for p in prompts)
        return v / v.norm().clamp(min=1e-8)

    def hidden(prompts):
        rows = []
        for p in prompts:
            with torch.no_grad():
                rows.append(torch.stack(model(**ids(p), output_hidden_states=True).hidden_states[:-1])[:, 0, -1])
        return torch.stack(rows).mean(0)

    layers = model.config.num_hidden_layers
    for mode in ["cheap_embed", "hidden"]:
        lines = [f"base_model: {base}", f"gate_mode: {mode}", "experts:"]
        for name, pos, neg in experts:
            lines += [f"  - source_model: {tmp_path / name}", f"    positive_prompts: {json.dumps(pos)}"]
            if neg:
                lines.append(f"    negative_prompts: {json.dumps(neg)}")
        cfg = tmp_path / f"{mode}.yml"
        cfg.write_text("\n".join(lines) + "\n")
        tswitch("moe", cfg, tmp_path / f"out-{mode}")
        ours = load_file(tmp_path / f"out-{mode}" / "model.safetensors")
        gates = []
        for _, pos, neg in experts:
            if mode == "cheap_embed":
                v = cheap(pos) - cheap(neg) if neg else cheap(pos)
                gates.append(v.expand(layers, -1))
            else:
                v = hidden(pos) - hidden(neg) if neg else hidden(pos)
                gates.append(v / v.norm(dim=-1, keepdim=True).clamp(min=1e-8))
        want = torch.stack(gates).permute(1, 0, 2)
        if mode == "cheap_embed":
            want = want / want.norm(dim=-1, keepdim=True)
        for layer in range(layers):
            got = ours[f"model.layers.{layer}.block_sparse_moe.gate.weight"].float()
            assert torch.allclose(got, want[layer], atol=2e-5, rtol=1e-4), (
                f"{mode}: layer {layer} router differs from the float32 reference by {(got - want[layer]).abs().max()}")

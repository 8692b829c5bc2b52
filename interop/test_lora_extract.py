"""tswitch extract-lora: PEFT loads the adapter, its merge equals base + B·A, the error is near numpy's exact SVD
optimum, and `tswitch pack` takes the adapter back.

The model pairs are made here: a tiny random BERT (biases and LayerNorms, as all-MiniLM-L6-v2) and a tiny Llama
(untied lm_head), each fine-tune = base + a rank-3 change + dense noise on every weight (a slowly decaying
spectrum beyond rank 3), changed biases and norms.
"""
import json

import numpy as np
import pytest
from safetensors.numpy import load_file


def _perturb(model, torch, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                m, n = p.shape
                low = torch.randn(m, 3, generator=g) @ torch.randn(3, n, generator=g) * 0.02
                p.add_(low + torch.randn(m, n, generator=g) * 0.004)
            else:
                p.add_(torch.randn(p.shape, generator=g) * 0.01)


@pytest.fixture(scope="module")
def bert_pair(tmp_path_factory, torch_one_thread):
    torch = torch_one_thread
    from transformers import BertConfig, BertModel

    root = tmp_path_factory.mktemp("lora-bert")
    cfg = BertConfig(vocab_size=96, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=80, max_position_embeddings=32)
    torch.manual_seed(11)
    base = BertModel(cfg).eval()
    base.save_pretrained(root / "base", safe_serialization=True)
    _perturb(base, torch, 12)
    base.save_pretrained(root / "ft", safe_serialization=True)
    return root


@pytest.fixture(scope="module")
def llama_pair(tmp_path_factory, torch_one_thread):
    torch = torch_one_thread
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("lora-llama")
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False)
    torch.manual_seed(21)
    base = LlamaForCausalLM(cfg).eval()
    base.save_pretrained(root / "base", safe_serialization=True)
    _perturb(base, torch, 22)
    base.save_pretrained(root / "ft", safe_serialization=True)
    return root


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def _optimal_error(delta, rank):
    s = np.linalg.svd(delta.astype(np.float64), compute_uv=False)
    return float(np.sqrt((s[rank:] ** 2).sum()))


@pytest.mark.parametrize("svd", ["randomized", "exact"])
def test_bert_adapter_loads_in_peft_and_is_near_optimal(tswitch, bert_pair, torch_one_thread, svd, tmp_path):
    torch = torch_one_thread
    from peft import PeftModel
    from transformers import BertModel

    out = tmp_path / "adapter"
    rank = 8
    proc = tswitch("extract-lora", bert_pair / "base", bert_pair / "ft", "-o", out, "--rank", rank,
                   "--svd", svd, "--json")
    report = json.loads(proc.stdout)
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == rank and cfg["lora_alpha"] == rank
    assert cfg["lora_bias"] is True  # every BERT linear has a changed bias
    factors = load_file(str(out / "adapter_model.safetensors"))
    base, ft = _weights(bert_pair / "base"), _weights(bert_pair / "ft")

    # Every 2-D linear weight is a LoRA target; embeddings and LayerNorms are stored whole.
    linears = sorted(k[: -len(".weight")] for k, v in base.items()
                     if v.ndim == 2 and "embeddings" not in k)
    assert sorted(cfg["target_modules"]) == linears
    assert "embeddings.word_embeddings" in cfg["modules_to_save"]
    assert "encoder.layer.0.attention.output.LayerNorm" in cfg["modules_to_save"]

    # Reconstruction error per module against numpy's exact SVD at the same rank (what mergekit computes).
    total_ours, total_opt, total_delta = 0.0, 0.0, 0.0
    for module in linears:
        a = factors[f"base_model.model.{module}.lora_A.weight"].astype(np.float64)
        b = factors[f"base_model.model.{module}.lora_B.weight"].astype(np.float64)
        assert a.shape[0] == rank and b.shape[1] == rank
        delta = ft[module + ".weight"].astype(np.float64) - base[module + ".weight"]
        ours = float(np.linalg.norm(delta - b @ a))
        opt = _optimal_error(delta, rank)
        assert ours <= opt * 1.01 + 1e-7, (module, ours, opt)
        total_ours += ours**2
        total_opt += opt**2
        total_delta += float((delta**2).sum())
        # The reported per-module error is the one of the factors in the file.
        rep = next(m for m in report["modules"] if m["module"] == module)
        assert rep["rank"] == rank
        assert rep["error_norm"] == pytest.approx(ours, rel=2e-3, abs=1e-6)
    assert report["relative_error"] == pytest.approx(np.sqrt(total_ours / total_delta), rel=2e-3)
    assert np.sqrt(total_ours) <= np.sqrt(total_opt) * 1.005

    # PEFT loads it; its merge is base + B·A for LoRA weights and the fine-tune for biases and saved modules.
    model = BertModel.from_pretrained(str(bert_pair / "base")).eval()
    peft_model = PeftModel.from_pretrained(model, str(out))
    merged = {k: v.detach().numpy() for k, v in peft_model.merge_and_unload().state_dict().items()}
    for module in linears:
        a = factors[f"base_model.model.{module}.lora_A.weight"]
        b = factors[f"base_model.model.{module}.lora_B.weight"]
        np.testing.assert_allclose(merged[module + ".weight"], base[module + ".weight"] + b @ a, atol=2e-6)
        np.testing.assert_allclose(merged[module + ".bias"], ft[module + ".bias"], atol=2e-6)
    for key in ["embeddings.word_embeddings.weight", "encoder.layer.1.output.LayerNorm.bias"]:
        np.testing.assert_array_equal(merged[key], ft[key])

    # tswitch reads it back: `pack BASE ADAPTER` packs what merging it changes.
    pack = tswitch("pack", bert_pair / "base", out, "-o", tmp_path / "x.tsw", "--json")
    packed = json.loads(pack.stdout)
    assert packed["tensors"] > len(linears)


def test_llama_embed_lora_and_lm_head(tswitch, llama_pair, torch_one_thread, tmp_path):
    torch = torch_one_thread
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    out = tmp_path / "adapter"
    tswitch("extract-lora", llama_pair / "base", llama_pair / "ft", "-o", out, "--max-rank", 6, "--embed-lora",
            "--skip-undecomposable", "--exclude-regex", r"layers\.1\.mlp")
    cfg = json.loads((out / "adapter_config.json").read_text())
    factors = load_file(str(out / "adapter_model.safetensors"))
    base, ft = _weights(llama_pair / "base"), _weights(llama_pair / "ft")
    assert "model.embed_tokens" in cfg["target_modules"] and "lm_head" in cfg["target_modules"]
    assert not any("layers.1.mlp" in t for t in cfg["target_modules"])
    assert cfg["modules_to_save"] is None and cfg["lora_bias"] is False  # norms skipped, llama has no biases
    ea = factors["base_model.model.model.embed_tokens.lora_embedding_A"]
    eb = factors["base_model.model.model.embed_tokens.lora_embedding_B"]
    assert ea.shape == (6, 64) and eb.shape == (32, 6)

    model = LlamaForCausalLM.from_pretrained(str(llama_pair / "base")).eval()
    merged = {k: v.detach().numpy()
              for k, v in PeftModel.from_pretrained(model, str(out)).merge_and_unload().state_dict().items()}
    np.testing.assert_allclose(merged["model.embed_tokens.weight"],
                               base["model.embed_tokens.weight"] + (eb @ ea).T, atol=2e-6)
    delta = ft["lm_head.weight"].astype(np.float64) - base["lm_head.weight"]
    err = np.linalg.norm(delta - (merged["lm_head.weight"] - base["lm_head.weight"]))
    assert err <= _optimal_error(delta, 6) * 1.01 + 1e-7
    # Excluded and skipped tensors keep the base's values.
    np.testing.assert_array_equal(merged["model.layers.1.mlp.up_proj.weight"], base["model.layers.1.mlp.up_proj.weight"])
    np.testing.assert_array_equal(merged["model.norm.weight"], base["model.norm.weight"])

    tswitch("pack", llama_pair / "base", out, "-o", tmp_path / "x.tsw")


def test_thresholds_cut_the_rank(tswitch, llama_pair, tmp_path):
    """--sv-relative keeps σᵢ ≥ t·σ₁ per tensor; the cut ranks go to rank_pattern/alpha_pattern (scaling 1)."""
    out = tmp_path / "adapter"
    proc = tswitch("extract-lora", llama_pair / "base", llama_pair / "ft", "-o", out, "--rank", 12,
                   "--sv-relative", "0.2", "--json")
    report = json.loads(proc.stdout)
    cfg = json.loads((out / "adapter_config.json").read_text())
    base, ft = _weights(llama_pair / "base"), _weights(llama_pair / "ft")
    factors = load_file(str(out / "adapter_model.safetensors"))
    for m in (m for m in report["modules"] if m["kind"] == "lora"):
        delta = ft[m["module"] + ".weight"].astype(np.float64) - base[m["module"] + ".weight"]
        s = np.linalg.svd(delta, compute_uv=False)
        assert m["rank"] == min(12, int((s >= 0.2 * s[0]).sum())), m["module"]
        assert factors[f"base_model.model.{m['module']}.lora_A.weight"].shape[0] == m["rank"]
    assert cfg["rank_pattern"] == cfg["alpha_pattern"]
    assert all(v < cfg["r"] for v in cfg["rank_pattern"].values())


def test_bad_inputs_are_clear_errors(tswitch, bert_pair, llama_pair, tmp_path):
    out = tmp_path / "adapter"
    # Different models: tensor names differ.
    proc = tswitch("extract-lora", bert_pair / "base", llama_pair / "ft", "-o", out, "--rank", 4, check=False)
    assert proc.returncode != 0 and "is not in the base" in proc.stderr
    # A rank above a weight's smaller side (k_proj is 16 × 32).
    proc = tswitch("extract-lora", llama_pair / "base", llama_pair / "ft", "-o", out, "--rank", 20, check=False)
    assert proc.returncode != 0 and "exceeds its smaller side 16" in proc.stderr
    assert not out.exists()
    proc = tswitch("extract-lora", llama_pair / "base", llama_pair / "ft", "-o", out, "--rank", 0, check=False)
    assert proc.returncode == 64
    # The same model twice: nothing to extract.
    proc = tswitch("extract-lora", llama_pair / "base", llama_pair / "base", "-o", out, "--rank", 2, check=False)
    assert proc.returncode != 0 and "nothing to extract" in proc.stderr
    # An existing output needs --force.
    out.mkdir()
    proc = tswitch("extract-lora", llama_pair / "base", llama_pair / "ft", "-o", out, "--rank", 2, check=False)
    assert proc.returncode != 0 and "--force" in proc.stderr
    tswitch("extract-lora", llama_pair / "base", llama_pair / "ft", "-o", out, "--rank", 2, "--force")
    assert (out / "adapter_config.json").is_file()

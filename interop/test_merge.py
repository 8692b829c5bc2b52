"""tswitch merge: the merged model loads in transformers, runs, and matches mergekit's committed output."""
import json
import pathlib
import shutil

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIX = ROOT / "Tests" / "MergeEngineTests" / "Fixtures"


def merge(tswitch, tmp_path, config, *extra):
    out = tmp_path / "out"
    # Configs name models relative to their own folder; copy it so outputs land in tmp.
    work = tmp_path / "fix"
    shutil.copytree(FIX, work, ignore=shutil.ignore_patterns("expected"))
    proc = tswitch("merge", work / f"{config}.yml", out, "--json", *extra)
    return out, json.loads(proc.stdout)


@pytest.mark.parametrize("config", ["ties", "task_arithmetic", "passthrough"])
def test_merged_model_loads_in_transformers(tswitch, tmp_path, torch_one_thread, config):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out, summary = merge(tswitch, tmp_path, config)
    assert summary["tensors"] > 0
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, 5, 64)
    assert torch.isfinite(logits).all()
    # Weights transformers loaded are exactly the file's (tied lm_head included) and match mergekit's merge.
    ours = load_file(out / "model.safetensors")
    expected = load_file(FIX / "expected" / f"{config}.safetensors")
    assert set(ours) == set(expected)
    state = model.state_dict()
    for name, tensor in ours.items():
        assert torch.equal(state[name], tensor), name
        torch.testing.assert_close(tensor, expected[name], rtol=1e-5, atol=1e-6)
    assert torch.equal(state["lm_head.weight"], ours["model.embed_tokens.weight"])
    assert "lm_head.weight" not in ours  # tied weights are not duplicated
    card = (out / "README.md").read_text()
    assert f"**Method:** `{config}`" in card and "```yaml" in card


def test_sharded_output_has_an_index_and_loads(tswitch, tmp_path, torch_one_thread):
    import torch
    from transformers import AutoModelForCausalLM

    out, _ = merge(tswitch, tmp_path, "ties", "--out-shard-size", "50K")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 1 and set(index["weight_map"].values()) == set(shards)
    assert index["metadata"]["total_size"] == sum(
        (out / s).stat().st_size - 8 - int.from_bytes((out / s).read_bytes()[:8], "little") for s in shards)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert sum(p.numel() for p in model.parameters()) == 53568


def test_bf16_out_dtype_is_written_and_declared(tswitch, tmp_path, torch_one_thread):
    import torch
    from safetensors import safe_open

    work = tmp_path / "fix"
    shutil.copytree(FIX, work, ignore=shutil.ignore_patterns("expected"))
    cfg = (work / "ties.yml").read_text().replace("out_dtype: float32", "out_dtype: bfloat16")
    (work / "ties_bf16.yml").write_text(cfg)
    tswitch("merge", work / "ties_bf16.yml", tmp_path / "out")
    with safe_open(tmp_path / "out" / "model.safetensors", "pt") as f:
        assert all(f.get_tensor(k).dtype == torch.bfloat16 for k in f.keys())
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config.get("torch_dtype", config.get("dtype")) == "bfloat16"


def test_bad_configs_fail_with_one_line_errors(tswitch, tmp_path):
    work = tmp_path / "fix"
    shutil.copytree(FIX, work, ignore=shutil.ignore_patterns("expected"))
    (work / "bad.yml").write_text("merge_method: ties\nbase_model: ./models/base\nmodels:\n  - model: ./models/a\n    parameters: {weight: 1, densty: 0.5}\n")
    proc = tswitch("merge", work / "bad.yml", tmp_path / "out", check=False)
    assert proc.returncode != 0
    assert "bad.yml:5" in proc.stderr and "densty" in proc.stderr
    (work / "bad2.yml").write_text("merge_method: ties\nbase_model: ./models/base\nmodels:\n  - model: ./models/nope\n    parameters: {weight: 1}\n")
    proc = tswitch("merge", work / "bad2.yml", tmp_path / "out", check=False)
    assert proc.returncode != 0 and "./models/nope" in proc.stderr and "never downloads" in proc.stderr
    assert not (tmp_path / "out").exists()

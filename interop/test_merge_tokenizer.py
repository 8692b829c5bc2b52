"""tswitch merge with tokenizer merging: the output tokenizer loads in transformers and gives mergekit's ids, and
the merged model (vocabulary resized) loads, runs and matches mergekit's committed output."""
import json
import pathlib
import shutil

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIX = ROOT / "Tests" / "MergeEngineTests" / "Fixtures" / "tokenizer"
CONFIGS = ["union_task_arithmetic", "union_linear", "base_linear", "model_linear", "tokens_task_arithmetic", "tied_union"]


@pytest.mark.parametrize("config", CONFIGS)
def test_tokenizer_and_model_match_mergekit(tswitch, tmp_path, torch_one_thread, config):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work = tmp_path / "fix"
    shutil.copytree(FIX, work, ignore=shutil.ignore_patterns("expected"))
    out = tmp_path / "out"
    tswitch("merge", work / f"{config}.yml", out)
    expected = json.loads((FIX / "expected" / f"{config}.json").read_text())

    tok = AutoTokenizer.from_pretrained(out)
    assert tok.get_vocab() == expected["vocab"]
    assert sorted(str(t) for t in tok.all_special_tokens) == expected["special"]
    ids = [tok(s, add_special_tokens=False)["input_ids"] for s in expected["samples"]]
    assert ids == expected["ids"]

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert model.get_input_embeddings().weight.shape[0] == expected["vocab_size"]
    with torch.no_grad():
        logits = model(torch.tensor([ids[1]])).logits
    assert logits.shape == (1, len(ids[1]), expected["vocab_size"]) and torch.isfinite(logits).all()
    ours = load_file(out / "model.safetensors")
    ref = load_file(FIX / "expected" / f"{config}.safetensors")
    assert set(ours) == set(ref)
    for name, tensor in ref.items():
        torch.testing.assert_close(ours[name], tensor, rtol=1e-5, atol=1e-6)

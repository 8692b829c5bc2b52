"""Zero-shot heads: `tswitch head` rows against sentence-transformers' normalized embeddings of the class
descriptions, the logit scale in the file's metadata, and `tswitch eval` with such a head against numpy."""
import json
import shutil

import numpy as np
import pytest
from safetensors import safe_open

from test_eval import TASKS, model_path, pooled_reference, read_jsonl, write_jsonl


def read_head(path):
    with safe_open(str(path), "np") as f:
        return f.get_tensor("weight"), f.get_tensor("bias"), f.metadata() or {}


@pytest.fixture(scope="module")
def sentence_transformer():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_path()), device="cpu")


@pytest.mark.parametrize("task,template", [("lang-id", None), ("man-pkg", None), ("wn-verb", "a word sense: {}")])
def test_head_rows_are_sentence_transformers_normalized_embeddings(tswitch, tmp_path, torch_one_thread,
                                                                    sentence_transformer, task, template):
    labels = json.loads((TASKS / task / "labels.json").read_text())
    extra = ["--template", template] if template else []
    tswitch("head", model_path(), "--labels", TASKS / task / "labels.json", "-o", tmp_path / "head.safetensors", *extra)
    weight, bias, meta = read_head(tmp_path / "head.safetensors")
    prompts = [template.replace("{}", d) if template else d for d in labels["descriptions"]]
    ref = sentence_transformer.encode(prompts, normalize_embeddings=True, convert_to_numpy=True)
    assert weight.dtype == np.float32 and weight.shape == (len(labels["labels"]), 384)
    assert np.abs(weight - ref).max() < 1e-5
    assert bias.dtype == np.float32 and not bias.any()
    assert float(meta["logit_scale"]) == 100.0 and meta["kind"] == "zero-shot"
    assert meta["template"] == (template or "{}")


def test_logit_scale_option_and_refusals(tswitch, tmp_path):
    tswitch("head", model_path(), "--labels", TASKS / "fortune" / "labels.json", "-o", tmp_path / "h.safetensors",
            "--logit-scale", 20)
    assert float(read_head(tmp_path / "h.safetensors")[2]["logit_scale"]) == 20.0
    out = tswitch("head", model_path(), "--labels", TASKS / "fortune" / "labels.json", "-o",
                  tmp_path / "h.safetensors", check=False)
    assert out.returncode != 0 and "--force" in out.stderr
    for name, change in [("none.json", lambda d: d.pop("descriptions")),
                         ("short.json", lambda d: d["descriptions"].pop())]:
        labels = json.loads((TASKS / "fortune" / "labels.json").read_text())
        change(labels)
        (tmp_path / name).write_text(json.dumps(labels))
        out = tswitch("head", model_path(), "--labels", tmp_path / name, "-o", tmp_path / f"{name}.safetensors",
                      check=False)
        assert out.returncode != 0 and str(tmp_path / name) in out.stderr and "descriptions" in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
        assert not (tmp_path / f"{name}.safetensors").exists()
    out = tswitch("head", model_path(), "--labels", TASKS / "fortune" / "labels.json", "-o",
                  tmp_path / "t.safetensors", "--template", "no placeholder", check=False)
    assert out.returncode != 0 and "{}" in out.stderr


def test_eval_with_a_zero_shot_head_equals_numpy_cosine(tswitch, tmp_path, torch_one_thread):
    accs = {}
    for task in ("code-lang", "wn-animal"):
        rows = read_jsonl(TASKS / task / "test.jsonl", 150)
        (tmp_path / "data" / task).mkdir(parents=True)
        write_jsonl(tmp_path / "data" / task / "test.jsonl", rows)
        hdir = tmp_path / "heads" / task
        hdir.mkdir(parents=True)
        tswitch("head", model_path(), "--labels", TASKS / task / "labels.json", "-o", hdir / "head.safetensors")
        shutil.copyfile(TASKS / task / "labels.json", hdir / "labels.json")
        weight, bias, meta = read_head(hdir / "head.safetensors")
        feats = pooled_reference(torch_one_thread, [r["text"] for r in rows], 48)
        feats /= np.linalg.norm(feats, axis=1, keepdims=True)
        logits = float(meta["logit_scale"]) * feats @ weight.T + bias
        accs[task] = float((logits.argmax(1) == np.array([r["label"] for r in rows])).mean())
    # a task folder without a head is left out, and named on stderr
    (tmp_path / "data" / "lang-id").mkdir()
    write_jsonl(tmp_path / "data" / "lang-id" / "test.jsonl", read_jsonl(TASKS / "lang-id" / "test.jsonl", 5))
    out = tswitch("eval", model_path(), "--head", tmp_path / "heads", "--data", tmp_path / "data", "--json")
    got = json.loads(out.stdout)
    assert set(got["tasks"]) == set(accs)
    assert "lang-id" in out.stderr
    for task, want in accs.items():
        assert got["tasks"][task]["n"] == 150
        assert got["tasks"][task]["accuracy"] == pytest.approx(want, abs=1.5 / 150)  # one near-tie may flip
    one = json.loads(tswitch("eval", model_path(), "--head", tmp_path / "heads" / "code-lang" / "head.safetensors",
                             "--data", tmp_path / "data" / "code-lang" / "test.jsonl", "--json").stdout)
    assert one["accuracy"] == got["tasks"]["code-lang"]["accuracy"]

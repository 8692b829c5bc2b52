"""Mixed-task batches through the CLI: `tswitch embed BASE --pack …` with a task per line embeds every text on its
own pack in shared batches; each text must equal `tswitch embed` on `tswitch apply`'s switched model (the base's own
embedding for lines without a task) within 1e-5."""
import json
import pathlib
import subprocess

import numpy as np
from safetensors import safe_open

ROOT = pathlib.Path(__file__).resolve().parents[1]
TASKS = ["fortune", "lang-id", "wn-verb"]


def model_path() -> pathlib.Path:
    return pathlib.Path(subprocess.check_output([str(ROOT / "scripts/model-path")], text=True).strip())


def texts_of(task, n):
    lines = (ROOT / "data/tasks" / task / "test.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    return [json.loads(l)["text"] for l in lines]


def embeddings(path):
    with safe_open(str(path), "np") as f:
        return f.get_tensor("embeddings")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def test_embed_with_a_task_per_line_equals_each_switched_model(tswitch, tmp_path):
    rows = []
    for i in range(4):
        for t in TASKS:
            rows.append({"text": texts_of(t, 4)[i], "task": t})
        rows.append({"text": texts_of("man-section", 4)[i]})  # no task: the base
    rows.append({"text": "an explicit base line", "task": "base"})
    write_jsonl(tmp_path / "mixed.jsonl", rows)
    tswitch("embed", model_path(), "--input", tmp_path / "mixed.jsonl", "--output", tmp_path / "mixed.safetensors",
            "--max-length", 64, "--batch", 8, *sum((["--pack", ROOT / "packs" / f"{t}.tsw"] for t in TASKS), []))
    got = embeddings(tmp_path / "mixed.safetensors")
    assert got.shape == (len(rows), 384)

    def reference(model, texts, name):
        write_jsonl(tmp_path / f"{name}.jsonl", [{"text": t} for t in texts])
        tswitch("embed", model, "--input", tmp_path / f"{name}.jsonl", "--output", tmp_path / f"{name}.safetensors",
                "--max-length", 64)
        return embeddings(tmp_path / f"{name}.safetensors")

    for t in TASKS + [None]:
        idx = [i for i, r in enumerate(rows) if r.get("task") == t or (t is None and r.get("task") in (None, "base"))]
        if t is None:
            model = model_path()
        else:
            tswitch("apply", model_path(), ROOT / "packs" / f"{t}.tsw", "-o", tmp_path / t)
            model = tmp_path / t
        want = reference(model, [rows[i]["text"] for i in idx], t or "base")
        err = np.linalg.norm(got[idx] - want, axis=1) / np.linalg.norm(want, axis=1)
        assert err.max() < 1e-5, (t, err.max())
    # The packs matter: a switched text is far from its base embedding.
    base_of_switched = reference(model_path(), [rows[0]["text"]], "base0")
    assert np.linalg.norm(got[0] - base_of_switched[0]) / np.linalg.norm(base_of_switched[0]) > 1e-3


def test_embed_refuses_a_task_without_a_pack(tswitch, tmp_path):
    write_jsonl(tmp_path / "bad.jsonl", [{"text": "a", "task": "fortune"}, {"text": "b", "task": "nope"}])
    proc = tswitch("embed", model_path(), "--input", tmp_path / "bad.jsonl", "--output", tmp_path / "o.safetensors",
                   "--pack", ROOT / "packs" / "fortune.tsw", check=False)
    assert proc.returncode != 0
    assert "text 2 asks for task 'nope'" in proc.stderr and "fortune" in proc.stderr
    assert not (tmp_path / "o.safetensors").exists()

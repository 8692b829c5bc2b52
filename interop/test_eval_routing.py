"""`tswitch eval --auto-switch ROUTER --route-mode per-example --json` reports where each task's texts were routed
(the confusion-matrix row), the routing accuracy and the task-agnostic accuracy; the destinations are checked
against `tswitch route` on `tswitch embed --normalize` of the same texts."""
import collections
import json
import shutil

from conftest import ROOT
from serve_process import model_path

TASKS = ("wn-verb", "lang-id")
N = 12
MAX_LENGTH = 48


def test_per_example_routing_report(tswitch, tmp_path):
    data, heads = tmp_path / "data", tmp_path / "heads"
    texts = {}
    for t in TASKS:
        (data / t).mkdir(parents=True)
        lines = (ROOT / "data/tasks" / t / "test.jsonl").read_text(encoding="utf-8").splitlines()[:N]
        (data / t / "test.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        shutil.copytree(ROOT / "data/heads" / t, heads / t)
        texts[t] = [json.loads(l)["text"] for l in lines]
    packs = sorted(str(p) for p in (ROOT / "packs").glob("*.tsw"))  # the router routes to all 8 tasks
    pack_tasks = {p.rsplit("/", 1)[1][:-4] for p in packs}
    out = tswitch("eval", model_path(), "--head", heads, "--data", data, "--pack", *packs,
                  "--auto-switch", ROOT / "packs/router.tsr", "--route-mode", "per-example",
                  "--max-length", MAX_LENGTH, "--json").stdout
    report = json.loads(out)

    agnostic, routed = [], []
    for t in TASKS:
        (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in texts[t]), encoding="utf-8")
        tswitch("embed", model_path(), "--input", tmp_path / "in.jsonl", "--output", tmp_path / "f.safetensors",
                "--max-length", MAX_LENGTH, "--normalize")
        expected = []
        for line in tswitch("route", ROOT / "packs/router.tsr", tmp_path / "f.safetensors").stdout.splitlines():
            parts = line.split("\t")
            if len(parts) == 2 and parts[0].isdigit():
                name = parts[1].split(" ")[0]
                expected.append(name if name in pack_tasks else "base")
        assert len(expected) == N
        score = report["tasks"][t]
        routing = score["routing"]
        assert routing["routes"] == dict(collections.Counter(expected))
        own = expected.count(t) / N
        assert abs(routing["accuracy"] - own) < 1e-12
        # Right only when routed right and labelled right: bounded by both, and by inclusion-exclusion below.
        ta = routing["task_agnostic_accuracy"]
        assert ta <= min(own, score["accuracy"]) + 1e-12
        assert ta >= own + score["accuracy"] - 1 - 1e-12
        assert abs(ta * N - round(ta * N)) < 1e-9
        agnostic.append(ta)
        routed.append(own)
    assert abs(report["routing_accuracy"] - sum(routed) / len(routed)) < 1e-12
    assert abs(report["task_agnostic_accuracy"] - sum(agnostic) / len(agnostic)) < 1e-12
    assert sum(routed) > 1.0  # the shipped router sends most of these texts home


def test_reports_without_routing_keep_their_keys(tswitch, tmp_path):
    data, heads = tmp_path / "data", tmp_path / "heads"
    t = TASKS[0]
    (data / t).mkdir(parents=True)
    lines = (ROOT / "data/tasks" / t / "test.jsonl").read_text(encoding="utf-8").splitlines()[:4]
    (data / t / "test.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    shutil.copytree(ROOT / "data/heads" / t, heads / t)
    report = json.loads(tswitch("eval", model_path(), "--head", heads, "--data", data, "--pack",
                                ROOT / "packs" / f"{t}.tsw", "--json").stdout)
    assert set(report) == {"accuracy", "data", "head", "mean_accuracy", "model", "n", "tasks"}
    assert set(report["tasks"][t]) == {"accuracy", "correct", "n"}

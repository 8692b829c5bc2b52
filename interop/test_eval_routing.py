"""`tswitch eval --auto-switch ROUTER --route-mode per-example --json` reports where each task's texts were routed
(the confusion-matrix row), the routing accuracy and the task-agnostic accuracy; the destinations are checked
against `tswitch route` on `tswitch embed --normalize` of the same texts."""
import collections
import json
import shutil

from conftest import ROOT, train_slices
from serve_process import model_path

TASKS = ("wn-verb", "lang-id")
N = 12
MAX_LENGTH = 48


def task_folders(tmp_path):
    """The first N test texts of each task and its head, as `tswitch eval --data --head` folders; the texts."""
    data, heads = tmp_path / "data", tmp_path / "heads"
    texts = {}
    for t in TASKS:
        (data / t).mkdir(parents=True)
        lines = (ROOT / "data/tasks" / t / "test.jsonl").read_text(encoding="utf-8").splitlines()[:N]
        (data / t / "test.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        shutil.copytree(ROOT / "data/heads" / t, heads / t)
        texts[t] = [json.loads(l)["text"] for l in lines]
    return data, heads, texts


def test_per_example_routing_report(tswitch, tmp_path):
    data, heads, texts = task_folders(tmp_path)
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


def test_layer_feature_router_routes_as_transformers_features(tswitch, tmp_path, torch_one_thread):
    """A router on base layers 3 and 6 (`route --build --layers`): eval's routing pass sends each text where
    `tswitch route` sends transformers' features of the same layers (unit blocks, concatenated, x 1/sqrt 2)."""
    from layer_features import layer_features, routed

    data, heads, texts = task_folders(tmp_path)
    train = [f"{t}={f}" for t, f in train_slices(tmp_path, TASKS)]
    router = tmp_path / "r.tsr"
    built = tswitch("route", "--build", router, "--base", model_path(), "--layers", "3,6", "--shrinkage", "0.3",
                    "--no-lexical", *train).stdout
    assert "768 features (layers 3,6)" in built
    assert router.read_bytes()[8] == 2  # version 2: readers without layer features refuse it
    packs = [str(ROOT / "packs" / f"{t}.tsw") for t in TASKS]
    report = json.loads(tswitch("eval", model_path(), "--head", heads, "--data", data, "--pack", *packs,
                                "--auto-switch", router, "--route-mode", "per-example", "--max-length", MAX_LENGTH,
                                "--json").stdout)

    for t in TASKS:
        features = layer_features(torch_one_thread, texts[t], (3, 6), MAX_LENGTH)
        expected = [name if name in TASKS else "base"
                    for name in routed(tswitch, router, features, tmp_path / "f.safetensors")]
        assert len(expected) == N
        assert report["tasks"][t]["routing"]["routes"] == dict(collections.Counter(expected))


def test_route_build_defaults_to_every_layer_after_the_embeddings(tswitch, tmp_path):
    """`route --build` from texts reads every base layer after the embeddings with λ 0.01 (docs/routing.md's best
    measured router); `--layers final` the final embedding with λ 0.03; an explicit --shrinkage wins."""
    base = ROOT / "Tests/EvaluationTests/Fixtures/roberta-tiny"  # 2 layers of 32
    pairs = []
    for t, words in (("a", "alpha beta gamma"), ("b", "one two three")):
        f = tmp_path / f"{t}.jsonl"
        f.write_text("".join(json.dumps({"text": f"{words} {i}"}) + "\n" for i in range(12)), encoding="utf-8")
        pairs.append(f"{t}={f}")
    out = tswitch("route", "--build", tmp_path / "d.tsr", "--base", base, *pairs).stdout
    assert "64 features (layers 1,2), λ = 0.01," in out
    assert (tmp_path / "d.tsr").read_bytes()[8] == 2
    out = tswitch("route", "--build", tmp_path / "f.tsr", "--base", base, "--layers", "final", *pairs).stdout
    assert "32 features (final embedding), λ = 0.03," in out
    assert (tmp_path / "f.tsr").read_bytes()[8] == 1
    out = tswitch("route", "--build", tmp_path / "s.tsr", "--base", base, "--shrinkage", "0.2", *pairs).stdout
    assert "64 features (layers 1,2), λ = 0.2," in out


def test_embed_layers_writes_what_a_layer_router_reads(tswitch, tmp_path, torch_one_thread):
    """`tswitch embed --layers` writes transformers' layer features (unit blocks, concatenated, x 1/sqrt n) with the
    layers in its metadata: the shipped layer router routes them as it routes transformers' features, a router on
    the sentence embedding refuses them by name, and `route --build` from such files fits the router it fits from
    the texts themselves."""
    import numpy as np
    from safetensors import safe_open
    from layer_features import layer_features, routed

    _, _, texts = task_folders(tmp_path)
    all_texts = [s for t in TASKS for s in texts[t]]
    src = tmp_path / "texts.jsonl"
    src.write_text("".join(json.dumps({"text": s}) + "\n" for s in all_texts), encoding="utf-8")
    out = tmp_path / "layers.safetensors"
    tswitch("embed", model_path(), "--input", src, "--output", out, "--layers", "3-6", "--max-length", MAX_LENGTH)
    with safe_open(str(out), "numpy") as f:
        ours = f.get_tensor("embeddings")
        assert f.metadata()["layers"] == "3,4,5,6"
    reference = layer_features(torch_one_thread, all_texts, (3, 4, 5, 6), MAX_LENGTH)
    assert ours.shape == reference.shape == (2 * N, 4 * 384)
    np.testing.assert_allclose(ours, reference, atol=2e-5)

    router = ROOT / "packs/router-layers.tsr"
    printed = tswitch("route", router, out).stdout
    ours_routes = [l.split("\t")[1].split(" ")[0] for l in printed.splitlines()
                   if "\t" in l and l.split("\t")[0].isdigit()]
    assert ours_routes == routed(tswitch, router, reference, tmp_path / "ref.safetensors")

    refused = tswitch("route", ROOT / "packs/router.tsr", out, check=False)
    assert refused.returncode != 0
    assert "holds features of layers 3,4,5,6" in refused.stderr and "reads the sentence embedding" in refused.stderr

    pairs_texts, pairs_features = [], []
    for t, tr in train_slices(tmp_path, TASKS):
        feats = tmp_path / f"{t}-train.safetensors"
        tswitch("embed", model_path(), "--input", tr, "--output", feats, "--layers", "3,6")
        pairs_texts.append(f"{t}={tr}")
        pairs_features.append(f"{t}={feats}")
    from_texts, from_features = tmp_path / "t.tsr", tmp_path / "f.tsr"
    tswitch("route", "--build", from_texts, "--base", model_path(), "--layers", "3,6", "--shrinkage", "0.3",
            "--no-lexical", *pairs_texts)
    built = tswitch("route", "--build", from_features, "--base", model_path(), "--shrinkage", "0.3",
                    *pairs_features).stdout
    assert "768 features (layers 3,6)" in built
    assert from_features.read_bytes() == from_texts.read_bytes()
    mixed = tswitch("route", "--build", tmp_path / "m.tsr", "--base", model_path(), f"a={out}",
                    pairs_features[0].replace(TASKS[0], "b", 1), check=False)
    assert mixed.returncode != 0 and "give features of one kind" in mixed.stderr

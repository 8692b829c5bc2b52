"""Fault injection on the CLI: a full disk, `kill -9` mid-merge, and inputs truncated or rewritten while mapped.

Every case checks the same contract: the command fails with one error naming the file, the target path never
holds a partial model, and running the command again (fault removed) succeeds with a loadable model.
"""
import glob
import json
import os
import resource
import signal
import subprocess
import time

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import tswitch_path

HIDDEN = 4096  # model width: 4 layers of 4096 x 1024 F32 matrices plus small tensors, about 70 MB per model


def write_model(folder, seed, scale=1.0):
    """A Llama-named checkpoint of about 70 MB with a config.json."""
    rng = np.random.default_rng(seed)
    tensors = {"model.embed_tokens.weight": rng.standard_normal((512, 1024), dtype=np.float32) * scale}
    for i in range(4):
        tensors[f"model.layers.{i}.mlp.up_proj.weight"] = rng.standard_normal((HIDDEN, 1024), dtype=np.float32) * scale
        tensors[f"model.layers.{i}.input_layernorm.weight"] = np.ones(1024, dtype=np.float32)
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "torch_dtype": "float32"}))
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    base = write_model(root / "base", 1)
    a = write_model(root / "a", 2)
    b = write_model(root / "b", 3)
    config = root / "linear.yml"
    config.write_text(f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: 0.5}}\n"
                      f"  - model: {b}\n    parameters: {{weight: 0.5}}\n")
    return {"root": root, "base": base, "a": a, "b": b, "config": config}


def leftovers(folder, name):
    """Hidden temporaries beside `name` (`.NAME.tmp-PID-N`)."""
    return glob.glob(str(folder / f".{name}.tmp-*"))


def run_limited(args, max_bytes):
    """Runs tswitch with files capped at `max_bytes` (RLIMIT_FSIZE) and SIGXFSZ ignored: write() fails with EFBIG
    exactly as on a full disk, without root or a tmpfs."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return subprocess.run([str(tswitch_path()), *map(str, args)], capture_output=True, text=True, timeout=600,
                          preexec_fn=limit)


@pytest.fixture(scope="module")
def pack(models, tswitch):
    out = models["root"] / "a.tsw"
    tswitch("pack", models["base"], models["a"], "-o", out, "--drop", "0.9")
    return out


@pytest.mark.parametrize("command", ["convert", "merge", "pack", "apply"])
def test_disk_full_fails_naming_the_file_and_leaves_nothing(tswitch, models, pack, tmp_path, command):
    out = tmp_path / ("out.tsw" if command == "pack" else "out")
    args = {
        "convert": ["convert", models["a"], out, "--dtype", "f16"],
        "merge": ["merge", models["config"], out],
        "pack": ["pack", models["base"], models["a"], "-o", out, "--drop", "0.9"],
        "apply": ["apply", models["base"], pack, "-o", out],
    }[command]
    proc = run_limited(args, 64 * 1024 if command == "pack" else 8 << 20)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    # The file named is the target, or for a model folder the shard inside its hidden temporary (.out.tmp-*/).
    assert out.name in lines[0] and "write failed" in lines[0] and "disk is full" in lines[0], lines[0]
    assert not out.exists()
    assert leftovers(tmp_path, out.name) == [], "a temporary was left behind"
    # Without the limit the same command succeeds and the output loads.
    tswitch(*args)
    if command == "pack":
        assert out.stat().st_size > 64 * 1024
    else:
        assert len(load_file(str(out / "model.safetensors"))) == 9


def start_merge(models, out):
    return subprocess.Popen([str(tswitch_path()), "merge", str(models["config"]), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def size_or_zero(path):
    """Size of a file the merge may rename or remove between listing and stat."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def wait_for_output_bytes(proc, folder, name):
    """Waits until the merge has written data into its hidden temporary folder; returns that folder."""
    deadline = time.time() + 300
    while time.time() < deadline:
        assert proc.poll() is None, f"the merge ended before the fault was injected: {proc.communicate()}"
        for tmp in leftovers(folder, name):
            # os.walk, not glob: the shard being written is itself a hidden temporary, which glob's ** skips.
            if any(size_or_zero(os.path.join(d, f)) > 0 for d, _, files in os.walk(tmp) for f in files):
                return tmp
        time.sleep(0.005)
    raise AssertionError("the merge wrote nothing in 300 s")


def check_merged(out, models):
    merged = load_file(str(out / "model.safetensors"))
    a = load_file(str(models["a"] / "model.safetensors"))
    b = load_file(str(models["b"] / "model.safetensors"))
    name = "model.layers.3.mlp.up_proj.weight"
    np.testing.assert_allclose(merged[name], 0.5 * a[name] + 0.5 * b[name], rtol=1e-6, atol=1e-6)


def test_kill_9_mid_merge_leaves_no_model_and_a_rerun_succeeds(tswitch, models, tmp_path):
    out = tmp_path / "merged"
    proc = start_merge(models, out)
    tmp = wait_for_output_bytes(proc, tmp_path, "merged")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    assert os.path.isdir(tmp)  # what a killed process leaves: its hidden temporary, never the target
    tswitch("merge", models["config"], out)
    check_merged(out, models)
    assert not os.path.exists(tmp), "the rerun did not sweep the killed run's temporary"
    assert leftovers(tmp_path, "merged") == []


@pytest.mark.parametrize("fault", ["truncate-while-reading", "truncate-before-commit", "rewrite-in-place"])
def test_input_changed_while_mapped_is_refused(tswitch, models, tmp_path, fault):
    """Truncated early, the merge touches a page past the new end: SIGBUS, caught by the guard (exit 74, the hidden
    temporary stays as after kill -9). Rewritten in place (no SIGBUS possible) or truncated late, the identity check
    before the rename refuses to commit (exit 1, temporary removed)."""
    b = tmp_path / "b"  # a private copy of one input, changed while the merge is stopped (SIGSTOP fixes the timing)
    b.mkdir()
    for f in models["b"].iterdir():
        (b / f.name).write_bytes(f.read_bytes())
    config = tmp_path / "linear.yml"
    config.write_text(models["config"].read_text().replace(str(models["b"]), str(b)))
    weights = b / "model.safetensors"
    original = weights.read_bytes()
    out = tmp_path / "merged"
    proc = subprocess.Popen([str(tswitch_path()), "merge", str(config), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if fault == "truncate-while-reading":
        deadline = time.time() + 300
        while not leftovers(tmp_path, "merged"):  # the output folder exists: the inputs are open, not yet read
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.001)
    else:
        wait_for_output_bytes(proc, tmp_path, "merged")
    proc.send_signal(signal.SIGSTOP)
    if fault.startswith("truncate"):
        os.truncate(weights, 4096)
    else:
        with open(weights, "r+b") as f:  # same size, same inode: only the contents and mtime change
            f.seek(len(original) // 2)
            f.write(b"\x7f" * 65536)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=600)
    assert len(err.strip().splitlines()) == 1, err
    assert str(weights) in err, err
    sigbus = proc.returncode == 74 and "changed or was truncated while being read" in err
    if fault == "truncate-while-reading":
        assert sigbus, err
    elif fault == "truncate-before-commit" and sigbus:
        pass  # the merge had not read every page yet when it was stopped: the guard caught the access
    else:
        assert proc.returncode == 1 and "changed while it was being read" in err and "was not written" in err, err
        assert leftovers(tmp_path, "merged") == []
    assert not out.exists()
    weights.write_bytes(original)
    tswitch("merge", config, out)
    check_merged(out, {**models, "b": b})

"""The command line itself: `--version`, bad option values as usage errors (exit code 64 with a message naming
the option), and one size syntax for both shard-size options (mergekit's: 5B is 5·10⁹ bytes)."""
import json

import numpy as np
import pytest
from safetensors.numpy import save_file

USAGE = 64  # ArgumentParser's exit code for a validation error (EX_USAGE)


def test_version_prints_one_version_string(tswitch):
    out = tswitch("--version").stdout.strip()
    assert out and len(out.splitlines()) == 1 and out[0].isdigit() and out.count(".") == 2


@pytest.mark.parametrize("args,needle", [
    (["embed", "m", "--input", "i.jsonl", "--output", "o.safetensors", "--batch", "0"], "--batch"),
    (["eval", "m", "--head", "h", "--data", "d", "--batch", "0"], "--batch"),
    (["eval", "m", "--head", "h", "--data", "d", "--max-length", "1"], "--max-length"),
    (["eval", "m", "--head", "h", "--data", "d", "--pack", "p.tsw", "--route-k", "0"], "--route-k"),
    (["pack", "b", "f", "-o", "p.tsw", "--drop", "1.5"], "--drop"),
    (["pack", "b", "f", "-o", "p.tsw", "--kind", "nope"], "--kind"),
    (["pack", "b", "f", "-o", "p.tsw", "--seed", "3"], "--seed"),
    (["route", "q", "f", "--k", "0"], "--k"),
    (["route", "--build", "out.safetensors", "fortune"], "TASK=FILE"),
    (["route", "--build", "r.tsr", "a=a.safetensors", "--lexical-weight", "2"], "JSONL texts"),
    (["route", "--build", "r.tsr", "--base", "m", "a=a.jsonl", "--lexical-alpha", "0"], "--lexical-alpha"),
    (["route", "r.tsr", "t.jsonl"], "--base"),
    (["apply", "b", "a.tsw:inf", "-o", "out"], "finite"),
    (["apply", "b", "a.tsw", "-o", "out", "--dtype", "f64"], "--dtype"),
    (["convert", "a", "b", "--max-shard-size=-5GB"], "negative"),
    (["convert", "a", "b", "--max-shard-size", "0"], "--max-shard-size"),
    (["convert", "a", "b", "--max-shard-size", "5X"], "not a size"),
    (["merge", "c.yml", "out", "--out-shard-size", "lots"], "not a size"),
    (["moe", "c.yml", "out", "--out-shard-size", "lots"], "not a size"),
    (["moe", "c.yml", "out", "--out-shard-size", "0"], "--out-shard-size"),
    (["moe", "c.yml", "out", "--random-seed", "seven"], "--random-seed"),
    (["analyze", "b", "f", "--head", "h", "--data", "d", "--drops", "0.5,1.5"], "drop ratio"),
])
def test_bad_values_are_usage_errors(tswitch, tmp_path, args, needle):
    proc = tswitch(*args, check=False)
    assert proc.returncode == USAGE, proc.stderr
    assert proc.stderr.startswith("Error: ") and needle in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_convert_shard_size_follows_mergekit_units(tswitch, tmp_path):
    """Two 4000-byte tensors: 5K (5000 bytes) needs two shards; 5B is five billion bytes, so one file."""
    src = tmp_path / "m.safetensors"
    save_file({"a": np.zeros(1000, np.float32), "b": np.ones(1000, np.float32)}, str(src))
    tswitch("convert", src, tmp_path / "k", "--max-shard-size", "5K")
    index = json.loads((tmp_path / "k" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 2
    tswitch("convert", src, tmp_path / "b", "--max-shard-size", "5B")
    assert (tmp_path / "b" / "model.safetensors").is_file()
    assert not (tmp_path / "b" / "model.safetensors.index.json").exists()
    tswitch("convert", src, tmp_path / "kib", "--max-shard-size", "8KiB")  # 8192 bytes: both tensors fit
    assert (tmp_path / "kib" / "model.safetensors").is_file()

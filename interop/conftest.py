"""Shared helpers of the Python interoperability tests: find the `tswitch` binary and run it."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Tests cross-check against torch; keep them to one thread on the shared machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def train_slices(folder, tasks, n=40):
    """Per task, a JSONL file in `folder` with the first `n` lines of its train split: [(task, path)]."""
    out = []
    for t in tasks:
        f = folder / f"{t}-train.jsonl"
        lines = (ROOT / "data/tasks" / t / "train.jsonl").read_text(encoding="utf-8").splitlines()[:n]
        f.write_text("\n".join(lines) + "\n", encoding="utf-8")
        out.append((t, f))
    return out


def tswitch_path() -> pathlib.Path:
    """$TSWITCH_BIN, or the debug build that `scripts/test` makes."""
    path = pathlib.Path(os.environ.get("TSWITCH_BIN", ROOT / ".build/debug/tswitch"))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no tswitch binary; run `swift build` or set TSWITCH_BIN")
    return path


@pytest.fixture(scope="session")
def tswitch():
    """Runs `tswitch ARGS...`; returns the CompletedProcess (text mode). `check=False` lets a test expect failure."""
    binary = tswitch_path()

    def run(*args, check=True):
        proc = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"tswitch {' '.join(map(str, args))} failed ({proc.returncode}): {proc.stderr}")
        return proc

    return run


@pytest.fixture(scope="session")
def torch_one_thread():
    import torch

    torch.set_num_threads(1)
    return torch

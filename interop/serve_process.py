"""Starting `tswitch serve` (or any server with a /ready probe) on a free loopback port and waiting until it is
ready: shared by the interop tests (interop/test_serve*.py) and the benchmarks (bench/serve/load.py). Plain
Python, no pytest, so the benchmarks import it too."""
import os
import pathlib
import socket
import subprocess
import time

import httpx

ROOT = pathlib.Path(__file__).resolve().parents[1]


def model_path() -> pathlib.Path:
    """The real all-MiniLM-L6-v2 folder (scripts/model-path)."""
    return pathlib.Path(subprocess.check_output([str(ROOT / "scripts/model-path")], text=True).strip())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, proc, timeout=180.0):
    """Polls URL/ready until it answers 200; raises RuntimeError (with the server's stderr when it has exited) if
    the process ends first or `timeout` seconds pass (the process is then killed)."""
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            stderr = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"server exited {proc.returncode} before it was ready ({url}): {stderr}")
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"server not ready within {timeout:.0f} s ({url})")
        time.sleep(0.2)


def start_serve(binary, packs, *options, env=None, timeout=180.0, capture=True):
    """Starts `BINARY serve BASE --packs PACKS --port P OPTIONS...` on a free port and waits for /ready.
    Returns (url, process); `env` adds to the environment. With `capture` stdout and stderr are pipes (text)."""
    port = free_port()
    pipe = subprocess.PIPE if capture else subprocess.DEVNULL
    proc = subprocess.Popen(
        [str(binary), "serve", str(model_path()), "--packs", str(packs), "--port", str(port), *map(str, options)],
        env={**os.environ, **(env or {})}, stdout=pipe, stderr=pipe, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc, timeout)
    return url, proc

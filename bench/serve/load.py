"""Load generation and process measurement shared by bench/serve-bench and bench/serve-soak (loopback only)."""
import asyncio
import json
import pathlib
import random
import socket
import subprocess
import time

import httpx

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The eight tasks with shipped packs (packs/*.tsw).
TASKS = ("code-lang", "deb-section", "fortune", "lang-id", "man-section", "unicode-cat", "wn-noun", "wn-verb")


def model_path() -> pathlib.Path:
    return pathlib.Path(subprocess.check_output([str(ROOT / "scripts/model-path")], text=True).strip())


def texts_by_length(task):
    """A task's test texts, shortest half and longest quarter (by characters): the short and long pools."""
    lines = (ROOT / "data" / "tasks" / task / "test.jsonl").read_text(encoding="utf-8").splitlines()
    texts = sorted((json.loads(l)["text"] for l in lines), key=len)
    return {"short": texts[: len(texts) // 2], "long": texts[-(len(texts) // 4):]}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, proc, timeout=600):
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"server exited {proc.returncode} before it was ready ({url})")
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.time() > deadline:
            proc.kill()
            raise SystemExit(f"server not ready within {timeout} s ({url})")
        time.sleep(0.25)


def rss_kib(pid):
    """(current, peak) resident set of a process in KiB, from /proc (VmRSS, VmHWM)."""
    fields = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        fields[k] = v.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, int(round(q / 100 * (len(sorted_values) - 1)))))
    return sorted_values[i]


async def one_request(client, url, model, texts, latencies, errors):
    t0 = time.perf_counter()
    try:
        r = await client.post(url + "/v1/embeddings", json={"model": model, "input": texts})
        ok = r.status_code == 200 and len(r.json()["data"]) == len(texts)
    except (httpx.HTTPError, ValueError, KeyError) as e:
        ok = False
        r = e
    latencies.append(time.perf_counter() - t0)
    if not ok:
        errors.append(str(getattr(r, "status_code", r)))
    return ok


def summary(latencies, errors, texts, elapsed):
    lat = sorted(latencies)
    return {
        "requests": len(latencies), "errors": len(errors), "error_samples": errors[:5], "texts": texts,
        "seconds": round(elapsed, 3), "texts_per_s": round(texts / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(percentile(lat, 50) * 1e3, 2), "p99_ms": round(percentile(lat, 99) * 1e3, 2),
    }


async def closed_loop(url, clients, pick, seconds, max_requests, texts_per_request=1):
    """`clients` clients, each sending its next request when the last is answered, until `seconds` pass or
    `max_requests` are sent. `pick(rng)` gives (model, [texts])."""
    latencies, errors = [], []
    sent = 0
    done_texts = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        async def worker(c):
            nonlocal sent, done_texts
            rng = random.Random(c)
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                model, texts = pick(rng)
                if await one_request(client, url, model, texts, latencies, errors):
                    done_texts += len(texts)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in range(clients)))
        elapsed = time.perf_counter() - t0
    return summary(latencies, errors, done_texts, elapsed)


async def open_loop(url, rate, pick, seconds, max_requests, cap=512):
    """Requests started at a fixed `rate` per second (whatever is still unanswered), for `seconds` or
    `max_requests`; latency includes no client-side queueing beyond `cap` outstanding requests."""
    latencies, errors = [], []
    done_texts = 0
    limits = httpx.Limits(max_connections=cap, max_keepalive_connections=cap)
    n = min(max_requests, int(rate * seconds))
    rng = random.Random(7)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        async def fire(model, texts):
            nonlocal done_texts
            if await one_request(client, url, model, texts, latencies, errors):
                done_texts += len(texts)
        t0 = time.perf_counter()
        tasks = []
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(fire(*pick(rng))))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    out = summary(latencies, errors, done_texts, elapsed)
    out["offered_per_s"] = round(rate, 1)
    return out

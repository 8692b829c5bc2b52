"""Load generation and process measurement shared by bench/serve-bench and bench/serve-soak (loopback only)."""
import asyncio
import json
import pathlib
import random
import sys
import time


ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "interop"))
import serve_process  # noqa: E402  (interop/serve_process.py: the server start shared with the tests)
from serve_process import free_port, model_path  # noqa: E402,F401  (re-exported to serve-bench and serve-soak)

# The eight tasks with shipped packs (packs/*.tsw).
TASKS = ("code-lang", "deb-section", "fortune", "lang-id", "man-section", "unicode-cat", "wn-noun", "wn-verb")


def texts_by_length(task):
    """A task's test texts, shortest half and longest quarter (by characters): the short and long pools."""
    lines = (ROOT / "data" / "tasks" / task / "test.jsonl").read_text(encoding="utf-8").splitlines()
    texts = sorted((json.loads(l)["text"] for l in lines), key=len)
    return {"short": texts[: len(texts) // 2], "long": texts[-(len(texts) // 4):]}


def wait_ready(url, proc, timeout=600):
    """The shared readiness wait, ending the benchmark with the reason when the server does not come up."""
    try:
        serve_process.wait_ready(url, proc, timeout)
    except RuntimeError as e:
        raise SystemExit(str(e))


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


class Connection:
    """One keep-alive HTTP/1.1 connection over asyncio streams: a load generator far cheaper per request than httpx
    (whose async pool, measured here, caps near 100 requests/s at 64 connections even on /health), so that the
    servers, not the client, are what is measured. Both servers answer with Content-Length."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def post(self, path, body: bytes):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        await self.writer.drain()
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = None
        close = False
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            k, _, v = line.decode("latin-1").partition(":")
            k = k.strip().lower()
            if k == "content-length":
                length = int(v)
            elif k == "connection" and v.strip().lower() == "close":
                close = True
            elif k == "transfer-encoding" and "chunked" in v.lower():
                raise ValueError("chunked responses are not handled by this load generator")
        payload = await self.reader.readexactly(length or 0)
        if close:
            self.close()
        return status, payload

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def split_url(url):
    host, _, port = url.removeprefix("http://").partition(":")
    return host, int(port)


async def one_request(conn, model, texts, latencies, errors):
    body = json.dumps({"model": model, "input": texts}).encode()
    t0 = time.perf_counter()
    try:
        status, payload = await conn.post("/v1/embeddings", body)
        # Every text answered: one "index" per data entry (the full parse is left out to keep the client cheap).
        ok = status == 200 and payload.count(b'"index"') == len(texts)
        problem = None if ok else f"{status} {payload[:120]!r}"
    except (OSError, asyncio.IncompleteReadError, ValueError) as e:
        conn.close()
        ok, problem = False, f"{type(e).__name__}: {e}"
    latencies.append(time.perf_counter() - t0)
    if not ok:
        errors.append(problem)
    return ok


def summary(latencies, errors, texts, elapsed):
    lat = sorted(latencies)
    return {
        "requests": len(latencies), "errors": len(errors), "error_samples": errors[:5], "texts": texts,
        "seconds": round(elapsed, 3), "texts_per_s": round(texts / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(percentile(lat, 50) * 1e3, 2), "p99_ms": round(percentile(lat, 99) * 1e3, 2),
    }


async def closed_loop(url, clients, pick, seconds, max_requests):
    """`clients` clients, each on its own connection sending its next request when the last is answered, until
    `seconds` pass or `max_requests` are sent. `pick(rng)` gives (model, [texts])."""
    latencies, errors = [], []
    sent = 0
    done_texts = 0
    deadline = time.perf_counter() + seconds
    host, port = split_url(url)

    async def worker(c):
        nonlocal sent, done_texts
        rng = random.Random(c)
        conn = Connection(host, port)
        while time.perf_counter() < deadline and sent < max_requests:
            sent += 1
            model, texts = pick(rng)
            if await one_request(conn, model, texts, latencies, errors):
                done_texts += len(texts)
        conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in range(clients)))
    elapsed = time.perf_counter() - t0
    return summary(latencies, errors, done_texts, elapsed)


async def open_loop(url, rate, pick, seconds, max_requests, cap=256):
    """Requests started at a fixed `rate` per second, each on a free connection of up to `cap`, for `seconds` or
    `max_requests` (a request finding all `cap` connections busy waits for one, and that wait counts)."""
    latencies, errors = [], []
    done_texts = 0
    host, port = split_url(url)
    idle = [Connection(host, port) for _ in range(cap)]
    free = asyncio.Semaphore(cap)
    n = min(max_requests, int(rate * seconds))
    rng = random.Random(7)

    async def fire(model, texts, started):
        nonlocal done_texts
        async with free:
            conn = idle.pop()
            lat = []
            ok = await one_request(conn, model, texts, lat, errors)
            idle.append(conn)
        latencies.append(time.perf_counter() - started)
        if ok:
            done_texts += len(texts)

    t0 = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fire(*pick(rng), time.perf_counter())))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    for c in idle:
        c.close()
    out = summary(latencies, errors, done_texts, elapsed)
    out["offered_per_s"] = round(rate, 1)
    return out

"""Soak: the real server under a steady mixed load for a while (5 minutes by default), with the
server's memory, file descriptors and latency reported per window.

    python -m bench.soak [--seconds 300] [--window 30] [--workers 16]      (make soak)

The load mixes what clients do over a server's life: forwards of the default model (JSON and
base64), inline configs, session chunks opened and closed, OIP infers, models registered and
deleted, bad requests (each must be a 4xx), and clients that leave before their answer; a fifth
of the sessions are left open, to expire (RNN_SERVE_SESSION_TTL_S=60 here). Each
window prints requests, failures (a 5xx, or an answer other than the expected one), p50/p99,
the server's RSS (all its processes) and open fds, and its open sessions. At the end: the RSS and
fd change from the first window to the last, and whether anything failed. Exit status 1 when a
request failed or the server died.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable

import httpx
import numpy as np

from bench.harness import ROOT, free_port, server
from service.client import b64_tensor

RNG = np.random.default_rng(0)
SEED = {"input": RNG.standard_normal((5, 3, 10)).tolist()}
SEED_B64 = {"input": b64_tensor(RNG.standard_normal((20, 8, 10))), "output_encoding": "b64"}
INLINE = {"config": {"mode": "GRU", "input_size": 4, "hidden_size": 16},
          "input": RNG.standard_normal((10, 2, 4)).tolist()}  # fmt: skip
CHUNK = {"input": b64_tensor(RNG.standard_normal((5, 1, 10)))}
V2 = {"inputs": [{"name": "input", "shape": [5, 10], "datatype": "FP32",
                  "data": RNG.standard_normal(50).tolist()}]}  # fmt: skip
BAD = [  # (method, path, body) -> 4xx
    ("POST", "/v1/models/default/forward", {"input": [[1.0] * 9]}),
    ("POST", "/v1/models/default/forward", {"input": "nope"}),
    ("POST", "/v1/models/nosuch/forward", SEED),
    ("POST", "/v1/rnn/forward", {"config": {"input_size": -1, "hidden_size": 2}, "input": []}),
    ("POST", "/v2/models/default/infer", {"inputs": []}),
]


def tree_pids(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return pids


def rss_and_fds(pid: int) -> tuple[float, int]:
    rss, fds = 0.0, 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                rss += int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024  # type: ignore[union-attr]
            fds += len(os.listdir(f"/proc/{p}/fd"))
        except (OSError, AttributeError):
            pass
    return rss, fds


class Load:
    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[float] = []
        self.requests = 0
        self.failures: list[str] = []

    def fail(self, what: str) -> None:
        if len(self.failures) < 20:
            print("FAILED:", what[:300], flush=True)
        self.failures.append(what)

    async def timed(self, call: Awaitable[httpx.Response], want: int) -> httpx.Response:
        t0 = time.perf_counter()
        r = await call  # a coroutine: it starts here
        self.latencies.append(time.perf_counter() - t0)
        self.requests += 1
        ok = r.status_code == want if want else 400 <= r.status_code < 500
        if not ok:
            self.fail(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}")
        return r

    async def worker(self, c: httpx.AsyncClient, stop: float, n: int) -> None:
        rng = random.Random(n)
        while time.monotonic() < stop:
            pick = rng.random()
            try:
                if pick < 0.45:
                    await self.timed(c.post("/v1/models/default/forward", json=SEED), 200)
                elif pick < 0.60:
                    await self.timed(c.post("/v1/models/default/forward", json=SEED_B64), 200)
                elif pick < 0.70:
                    await self.timed(c.post("/v2/models/default/infer", json=V2), 200)
                elif pick < 0.75:
                    await self.timed(c.post("/v1/rnn/forward", json=INLINE), 200)
                elif pick < 0.85:
                    await self.session(c, rng)
                elif pick < 0.95:
                    method, path, body = rng.choice(BAD)
                    await self.timed(c.request(method, path, json=body), 0)
                elif pick < 0.98:
                    await self.model(c, n)
                else:
                    await self.leave()
            except httpx.RequestError as exc:
                self.fail(f"transport: {exc.request.method} {exc.request.url.path}: {exc!r}")

    async def session(self, c: httpx.AsyncClient, rng: random.Random) -> None:
        r = await self.timed(c.post("/v1/models/default/sessions", json={}), 201)
        sid = r.json()["session_id"]
        for _ in range(rng.randint(1, 5)):
            await self.timed(c.post(f"/v1/sessions/{sid}/forward", json=CHUNK), 200)
        if rng.random() < 0.8:  # the rest expire on their own
            await self.timed(c.delete(f"/v1/sessions/{sid}"), 204)

    async def model(self, c: httpx.AsyncClient, n: int) -> None:
        name = f"soak-{n}"
        body = {"name": name, "config": {"input_size": 10, "hidden_size": 20}}
        await self.timed(c.post("/v1/models", json=body), 201)
        await self.timed(c.post(f"/v1/models/{name}/forward", json=SEED), 200)
        await self.timed(c.delete(f"/v1/models/{name}"), 204)

    async def leave(self) -> None:
        """A client that sends a forward and goes away before its answer."""
        host, port = self.url.removeprefix("http://").split(":")
        _, writer = await asyncio.open_connection(host, int(port))
        body = b'{"input": %s}' % str(SEED["input"]).encode()
        writer.write(b"POST /v1/models/default/forward HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))  # fmt: skip
        await writer.drain()
        writer.close()


async def soak(url: str, pid: int, seconds: float, window: float, workers: int) -> int:
    load = Load(url)
    stop = time.monotonic() + seconds
    # Drop idle connections before the server does (uvicorn closes them after 5 s): otherwise a
    # request sent just as the server closes fails, the keep-alive race every HTTP/1.1 client has.
    limits = httpx.Limits(max_connections=workers, keepalive_expiry=4)
    rows: list[tuple[float, int]] = []
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
        tasks = [asyncio.create_task(load.worker(c, stop, n)) for n in range(workers)]
        print(f"{'window':>6} {'requests':>9} {'failed':>6} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'RSS MiB':>8} {'fds':>5} {'sessions':>8}")  # fmt: skip
        start = time.monotonic()
        k = 0
        while not all(t.done() for t in tasks):
            await asyncio.wait(tasks, timeout=window)
            k += 1
            lat, load.latencies = sorted(load.latencies), []
            requests, load.requests = load.requests, 0
            rss, fds = rss_and_fds(pid)
            metrics = (await c.get("/metrics")).text
            found = re.search(r"^rnn_serve_open_sessions ([0-9.e+]+)$", metrics, re.M)
            sessions = float(found.group(1)) if found else float("nan")
            p50 = statistics.median(lat) * 1e3 if lat else float("nan")
            p99 = lat[int(len(lat) * 0.99)] * 1e3 if lat else float("nan")
            rows.append((rss, fds))
            print(f"{time.monotonic() - start:6.0f} {requests:9d} {len(load.failures):6d} "
                  f"{p50:7.1f} {p99:7.1f} {rss:8.1f} {fds:5d} {sessions:8.0f}", flush=True)  # fmt: skip
            if k > seconds / window + 5:
                break
    (rss0, fds0), (rss1, fds1) = rows[0], rows[-1]
    print(f"RSS {rss0:.0f} -> {rss1:.0f} MiB ({rss1 - rss0:+.0f}), fds {fds0} -> {fds1} "
          f"({fds1 - fds0:+d}); failures: {len(load.failures)}")  # fmt: skip
    return 1 if load.failures else 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--window", type=float, default=30)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--frontends", default="1")
    parser.add_argument("--session-ttl", type=float, default=60)
    args = parser.parse_args()
    port = free_port()
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    env = {
        "RNN_SERVE_LOG_LEVEL": "warning",
        "RNN_SERVE_FRONTENDS": args.frontends,
        # sessions left open expire within the soak, so their count and memory level off
        "RNN_SERVE_SESSION_TTL_S": str(args.session_ttl),
    }
    with tempfile.TemporaryDirectory() as repo, server(
        command, port, {**env, "RNN_SERVE_MODEL_REPOSITORY": repo}, out / "soak.log"
    ) as (url, pid):  # fmt: skip
        status = asyncio.run(soak(url, pid, args.seconds, args.window, args.workers))
        alive = httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    print("server still ready at the end:", alive)
    sys.exit(status or (0 if alive else 1))


if __name__ == "__main__":
    main()

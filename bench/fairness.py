"""Fairness under a long forward: small requests to `default` while one inline forward of
150,000 steps (hidden 1024, a 781 KiB body) runs — the issue's probe — with time slices (the
default) and without (RNN_SERVE_SLICE_MACS=1e30), in the same run.

    python -m bench.fairness [STEPS] [--slice-macs M]    (make bench-fairness)

Prints, for each server, the small requests' p50/p99/max while the long forward ran, the long
forward's own time, and its answer's largest difference from the float64 NumPy oracle; then the
ratios. The long answer is 150,000 x 1024 floats (614 MB as float32), so this needs a few GB of
memory and RNN_SERVE_MAX_TENSOR_ELEMENTS raised for it (done here).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from typing import Any

import httpx
import numpy as np

from bench.harness import ROOT, free_port, server
from tests.oracle import forward, seeded_params
from tests.support.helpers import b64, decode

CONFIG = {"input_size": 1, "hidden_size": 1024}
SMALL = {"input": [[0.0] * 10]}


async def small_client(c: httpx.AsyncClient, done: asyncio.Event, out: list[float]) -> None:
    while not done.is_set():
        t0 = time.perf_counter()
        r = await c.post("/v1/models/default/forward", json=SMALL)
        out.append(time.perf_counter() - t0)
        if r.status_code != 200:
            sys.exit(f"a small request failed: {r.status_code} {r.text[:200]}")
        await asyncio.sleep(0.01)


async def probe(url: str, x: np.ndarray[Any, Any], clients: int) -> dict[str, Any]:
    body = {"config": CONFIG, "input": b64(x), "output_encoding": "b64"}
    limits = httpx.Limits(max_connections=clients + 1)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as c:
        for _ in range(20):  # warm
            await c.post("/v1/models/default/forward", json=SMALL)
        t0 = time.perf_counter()
        long = asyncio.create_task(c.post("/v1/rnn/forward", json=body))
        await asyncio.sleep(0.5)  # the long one is running
        done = asyncio.Event()
        latencies: list[float] = []
        smalls = [asyncio.create_task(small_client(c, done, latencies)) for _ in range(clients)]
        answer = await long
        long_s = time.perf_counter() - t0
        done.set()
        await asyncio.gather(*smalls)
    if answer.status_code != 200:
        sys.exit(f"the long forward failed: {answer.status_code} {answer.text[:300]}")
    got = answer.json()
    latencies.sort()
    return {
        "long_s": long_s,
        "output": decode(got["output"]),
        "h_n": decode(got["h_n"]),
        "n": len(latencies),
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "max": latencies[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("steps", type=int, nargs="?", default=150_000)
    parser.add_argument(
        "--slice-macs", default=None, help="RNN_SERVE_SLICE_MACS (default: the server's)"
    )
    parser.add_argument("--clients", type=int, default=4, help="concurrent small-request clients")
    args = parser.parse_args()
    x = np.random.default_rng(0).standard_normal((args.steps, 1)).astype(np.float32)
    print(f"long forward: inline {CONFIG}, input {x.shape}; {args.clients} small clients")
    t0 = time.perf_counter()
    want, want_h, _ = forward(seeded_params(CONFIG), CONFIG, x)
    print(f"float64 oracle: {time.perf_counter() - t0:.1f} s")
    env = {
        "RNN_SERVE_MAX_TENSOR_ELEMENTS": str(args.steps * 1024 + 1),
        "RNN_SERVE_MAX_BODY_BYTES": str(1 << 30),
        "RNN_SERVE_REQUEST_TIMEOUT_S": "900",
        "RNN_SERVE_LOG_LEVEL": "warning",
    }
    runs = {"sliced": {} if args.slice_macs is None else {"RNN_SERVE_SLICE_MACS": args.slice_macs},
            "unsliced": {"RNN_SERVE_SLICE_MACS": "1e30"}}  # fmt: skip
    results = {}
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    for name, extra in runs.items():
        port = free_port()
        command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
        with tempfile.TemporaryDirectory() as repo, server(
            command, port, {**env, **extra, "RNN_SERVE_MODEL_REPOSITORY": repo},
            out / f"fairness-{name}.log",
        ) as (url, _):  # fmt: skip
            r = asyncio.run(probe(url, x, args.clients))
        err = max(float(np.abs(r["output"] - want).max()), float(np.abs(r["h_n"] - want_h).max()))
        results[name] = r
        print(f"{name:9s} small requests during the long one: n={r['n']} "
              f"p50 {r['p50'] * 1e3:.1f} ms  p99 {r['p99'] * 1e3:.1f} ms  max {r['max'] * 1e3:.1f} ms"
              f" | long forward {r['long_s']:.1f} s, max |diff| vs oracle {err:.2e}")  # fmt: skip
    s, u = results["sliced"], results["unsliced"]
    print(f"ratio sliced/unsliced: small p99 {s['p99'] / u['p99']:.4f}, "
          f"long forward time {s['long_s'] / u['long_s']:.2f}")  # fmt: skip
    print(f"target p99 < 100 ms with slices: {'met' if s['p99'] < 0.1 else 'NOT met'}")


if __name__ == "__main__":
    main()

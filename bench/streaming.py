"""Streaming load: many sessions sending small chunks at once, against the stateless equivalent
(the client ships h0 and reads h_n back on every call). Run as its own process by bench.run:

    python -m bench.streaming URL [SESSIONS] [CHUNKS]

Prints one JSON line per mode: chunks/s and chunk latency percentiles.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import httpx
import numpy as np

from service.client import b64_tensor, from_b64_tensor

STEPS, FEATURES, ROWS, HIDDEN = 5, 10, 2, 20  # chunks of 5 steps for the seed model


async def stream(client: httpx.AsyncClient, mode: str, chunks: int, latencies: list[float]) -> None:
    rng = np.random.default_rng()
    x = rng.standard_normal((STEPS, 1, FEATURES)).astype(np.float32)
    if mode == "session":
        r = await client.post("/v1/models/default/sessions", json={"batch_size": 1})
        r.raise_for_status()
        url, state = f"/v1/sessions/{r.json()['session_id']}/forward", None
    else:
        url, state = "/v1/models/default/forward", np.zeros((ROWS, 1, HIDDEN), np.float32)
    for _ in range(chunks):
        body: dict[str, Any] = {"input": b64_tensor(x), "output_encoding": "b64"}
        if state is not None:
            body["h0"] = b64_tensor(state)
        t = time.perf_counter()
        r = await client.post(url, json=body)
        latencies.append(time.perf_counter() - t)
        r.raise_for_status()
        if state is not None:
            state = from_b64_tensor(r.json()["h_n"])
    if mode == "session":
        await client.delete(url.removesuffix("/forward"))


async def run(url: str, mode: str, sessions: int, chunks: int) -> dict[str, Any]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=sessions, max_keepalive_connections=sessions)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(stream(client, mode, chunks, latencies) for _ in range(sessions)))
        elapsed = time.perf_counter() - start
    ms = np.asarray(latencies) * 1e3
    return {
        "mode": mode, "sessions": sessions, "chunks": len(latencies),
        "chunks_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
    }  # fmt: skip


def main() -> None:
    url = sys.argv[1]
    sessions = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    chunks = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    for mode in ("stateless", "session", "stateless", "session"):  # alternate: fairer to both
        print(json.dumps(asyncio.run(run(url, mode, sessions, chunks))), flush=True)


if __name__ == "__main__":
    main()

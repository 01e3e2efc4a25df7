"""Slow clients against a running server: N connections send a request head a byte a second
while ordinary forwards are timed.

    python -m bench.slowloris http://127.0.0.1:8000 [CONNECTIONS] [SECONDS]

Prints how many slow connections the server closed and when, and the ordinary requests'
latency and failures meanwhile.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from urllib.parse import urlparse

import httpx

HEAD = b"POST /v1/models/default/forward HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


async def slow_client(host: str, port: int, seconds: float, closed: list[float]) -> None:
    start = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        closed.append(0.0)  # refused outright
        return
    try:
        for byte in HEAD:
            if time.monotonic() - start > seconds:
                return
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1), timeout=1.0) == b"" or reader.at_eof():
                    closed.append(time.monotonic() - start)
                    return
                closed.append(time.monotonic() - start)  # it answered (408 or 503): done
                return
            except TimeoutError:
                continue
    except (ConnectionError, OSError):
        closed.append(time.monotonic() - start)
    finally:
        writer.close()


async def main(url: str, connections: int, seconds: float) -> None:
    parsed = urlparse(url)
    closed: list[float] = []
    attack = [
        asyncio.create_task(
            slow_client(parsed.hostname or "127.0.0.1", parsed.port or 80, seconds, closed)
        )
        for _ in range(connections)
    ]
    latencies, failures = [], 0
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            try:
                r = await client.post("/v1/models/default/forward", json={"input": [[0.0] * 10]})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append((time.perf_counter() - t0) * 1e3)
            failures += not ok
            await asyncio.sleep(0.1)
    await asyncio.gather(*attack, return_exceptions=True)
    held = connections - len(closed)
    latencies.sort()
    print(
        f"{connections} slow connections over {seconds:g} s: {len(closed)} closed by the server "
        f"(median after {statistics.median(closed) if closed else float('nan'):.1f} s), "
        f"{held} still held at the end; ordinary forwards meanwhile: {len(latencies)} sent, "
        f"{failures} failed, p50 {latencies[len(latencies) // 2]:.1f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)]:.1f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 400,
                     float(sys.argv[3]) if len(sys.argv) > 3 else 30))  # fmt: skip

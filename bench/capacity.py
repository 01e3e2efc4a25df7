"""Capacity: how many real-time streams one server sustains within a p99 budget.

Each stream sends a chunk of 10 steps of the seed model (10 features, base64) every 50 ms (20
chunks/s), open loop: chunk k is due at t0 + k * 50 ms whatever happened before, and its latency
is counted from when it was due (so a server that falls behind is charged for it: no coordinated
omission). The number of streams ramps up until the p99 passes the budget (50 ms).

- sessions: the server holds the state (in memory); each chunk carries `start_step` (exactly
  once);
- sessions-redis: the same with RNN_SERVE_SESSION_STORE pointing at a Redis on this machine
  (Debian's redis-server, AOF with fsync every second, as the compose file runs it): every
  chunk's state commits to Redis before its answer. Also reported: the commit's p50/p99 (from the
  server's `rnn_serve_session_store_seconds{op="commit"}` histogram) and Redis's own CPU;
- stateless: the equivalent without sessions — each chunk goes to /v1/models/default/forward with
  `h0` = the `h_n` of the stream's previous answer (the client ships the state both ways);
- grpc, grpc-redis: each stream is a sequence on Triton's `ModelStreamInfer` (raw FP32 tensors,
  `sequence_id`, `sequence_start`, `start_step`), sessions in memory or in Redis. Streams share
  HTTP/2 connections, GRPC_STREAMS_PER_CHANNEL a connection, each its own gRPC stream, as many
  sources behind one gateway would;
- ws, ws-redis: each stream is a WebSocket session (`/v1/models/default/stream`), its chunks
  binary frames (the fixed header and the raw FP32 values, `start_step` in it), sessions in
  memory or in Redis; one connection a stream, no compression;
- grpc-floor: the same streams against `bench.grpc_echo`, a bare grpc.aio server answering each
  message with a fixed reply: the floor of a stream message, before any rnn-serve code (not in
  the default modes).

The HTTP load generator is one process of raw HTTP/1.1 over keep-alive connections (uvloop, bodies
built from pre-encoded bytes, no HTTP library), so that it is cheap; the gRPC one is grpc.aio
with requests serialized by hand from pre-encoded bytes and answers read only for their error
field. Both report their own CPU use and how late they sent chunks against their schedule, to
show whether the generator is the bottleneck.

    python -m bench.capacity [--budget-ms 50] [--step-s 8] [--levels 20,40,...] [--url URL]

Without --url it starts `rnn-serve` as `make run` does. Writes bench/out/capacity.json; `python
-m bench.run --report` puts it in bench/out/REPORT.md, `make bench-publish` into bench/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from bench.harness import OUT, cpu_seconds, free_port, server, wait_for_port
from service.client import b64_tensor

PERIOD_S = 0.05  # 20 chunks/s
STEPS = 10
LEVELS = [20, 40, 60, 80, 100, 120, 140, 160, 200, 240, 280, 320, 380, 440, 500, 600, 700, 800]
GRPC_STREAMS_PER_CHANNEL = 100
MODES = "sessions,sessions-redis,stateless,grpc,grpc-redis,ws,ws-redis"


def _request(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, await reader.readexactly(length)


class Level:
    """One step of the ramp: `streams` streams for `seconds`, the first second not counted."""

    def __init__(self, streams: int, seconds: float) -> None:
        self.streams, self.seconds = streams, seconds
        self.latencies: list[float] = []
        self.lags: list[float] = []  # how late a chunk was sent against its schedule
        self.errors = 0
        self.sent = 0


async def paced(
    level: Level, t0: float, phase: float, chunk: Callable[[int], Awaitable[bool]]
) -> None:
    """Chunk k due at t0 + phase + k * PERIOD_S, open loop, until the level's end: `chunk(k)`
    sends it and says whether its answer was one; latency is counted from when it was due."""
    loop = asyncio.get_running_loop()
    start, stop, k = t0 + phase, t0 + level.seconds, 0
    while (due := start + k * PERIOD_S) < stop:
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sent = loop.time()
        ok = await chunk(k)
        done = loop.time()
        if not ok:
            level.errors += 1
        if due >= t0 + 1.0:
            level.latencies.append(done - due)
            level.lags.append(sent - due)
            level.sent += 1
        k += 1


async def stream(
    host: str, port: int, mode: str, level: Level, t0: float, phase: float, seed: int
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    x = np.random.default_rng(seed).standard_normal((STEPS, 1, 10)).astype(np.float32)
    x_b64 = orjson.dumps(b64_tensor(x))
    try:
        if mode.startswith("sessions"):
            status, body = await _exchange(
                reader, writer, _request("/v1/models/default/sessions", b"{}")
            )
            assert status == 201, body
            sid = orjson.loads(body)["session_id"]
            path = f"/v1/sessions/{sid}/forward"
        else:
            path = "/v1/models/default/forward"
        state = {"h0": orjson.dumps(b64_tensor(np.zeros((2, 1, 20), np.float32)))}

        async def chunk(k: int) -> bool:
            if mode.startswith("sessions"):
                body = b'{"input":%s,"output_encoding":"b64","start_step":%d}' % (x_b64, k * STEPS)
            else:
                body = b'{"input":%s,"h0":%s,"output_encoding":"b64"}' % (x_b64, state["h0"])
            status, answer = await _exchange(reader, writer, _request(path, body))
            if status == 200 and mode == "stateless":  # the state goes out again with the next
                state["h0"] = orjson.dumps(orjson.loads(answer)["h_n"])
            return status == 200

        await paced(level, t0, phase, chunk)
    finally:
        writer.close()


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _parameter(name: str, kind: int, value: int) -> bytes:
    """A `parameters` map entry (field 4): InferParameter with a bool (1) or int64 (2) value."""
    return _field(4, _field(1, name.encode()) + _field(2, _varint(kind << 3) + _varint(value)))


def grpc_chunk(x_raw: bytes, sequence_id: int, k: int) -> bytes:
    """A ModelInferRequest for chunk k of a sequence, serialized by hand (the generator must be
    cheap): model "default", one FP32 input (STEPS, 1, 10) as raw contents, the sequence flags
    and start_step."""
    shape = b"".join(_varint(d) for d in (STEPS, 1, 10))
    tensor = _field(1, b"input") + _field(2, b"FP32") + _field(3, shape)
    message = _field(1, b"default") + _field(5, tensor) + _field(7, x_raw)
    message += _parameter("sequence_id", 2, sequence_id) + _parameter("start_step", 2, k * STEPS)
    if k == 0:
        message += _parameter("sequence_start", 1, 1)
    return message


async def grpc_stream(
    channel: Any, level: Level, t0: float, phase: float, seed: int, sequence_id: int
) -> None:
    x = np.random.default_rng(seed).standard_normal((STEPS, 1, 10)).astype(np.float32)
    x_raw = x.tobytes()
    call = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")()
    try:

        async def chunk(k: int) -> bool:
            await call.write(grpc_chunk(x_raw, sequence_id, k))
            answer = await call.read()
            return bool(answer[:1] == b"\x12")  # an answer, not an error_message (field 1)

        await paced(level, t0, phase, chunk)
        await call.done_writing()
    finally:
        call.cancel()


async def ws_stream(host: str, port: int, level: Level, t0: float, phase: float, seed: int) -> None:
    """A WebSocket session: binary frames built once, only the step patched in for each chunk."""
    import struct

    from websockets.asyncio.client import connect

    from service.codecs.wsbinary import pack

    x = np.random.default_rng(seed).standard_normal((STEPS, 1, 10)).astype(np.float32)
    frame = bytearray(pack(x, "float32", 0))
    from websockets.exceptions import ConnectionClosed

    url = f"ws://{host}:{port}/v1/models/default/stream"
    try:
        async with connect(url, compression=None, max_size=None, open_timeout=60) as ws:
            await ws.recv()  # the session

            async def chunk(k: int) -> bool:
                struct.pack_into("<q", frame, 4, k * STEPS)
                await ws.send(bytes(frame))
                return isinstance(await ws.recv(), bytes)  # an answer, not an error's text

            await paced(level, t0, phase, chunk)
    except ConnectionClosed:  # refused or closed by the server (1013 when overloaded): an error
        level.errors += 1


_sequences = iter(range(1, 1 << 62))  # every stream of a run is a new sequence


async def run_level(host: str, port: int, mode: str, streams: int, seconds: float) -> Level:
    level = Level(streams, seconds)
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.5  # time to connect and open the sessions
    if mode.startswith("grpc"):
        import grpc

        channels = [grpc.aio.insecure_channel(f"{host}:{port}")
                    for _ in range(0, streams, GRPC_STREAMS_PER_CHANNEL)]  # fmt: skip
        try:
            await asyncio.gather(*(
                grpc_stream(channels[i // GRPC_STREAMS_PER_CHANNEL], level, t0,
                            PERIOD_S * i / streams, i, next(_sequences))
                for i in range(streams)
            ))  # fmt: skip
        finally:
            for channel in channels:
                await channel.close()
        return level
    if mode.startswith("ws"):
        await asyncio.gather(
            *(ws_stream(host, port, level, t0, PERIOD_S * i / streams, i) for i in range(streams))
        )
        return level
    await asyncio.gather(
        *(stream(host, port, mode, level, t0, PERIOD_S * i / streams, i) for i in range(streams))
    )
    return level


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000) if values else float("nan")


def ramp(
    url: str, pid: int | None, mode: str, levels: list[int], seconds: float, budget_ms: float
) -> list[dict[str, Any]]:
    import uvloop

    host, port = url.removeprefix("http://").rsplit(":", 1)
    rows = []
    for streams in levels:
        cpu0, server0, wall0 = time.process_time(), cpu_seconds(pid) if pid else 0.0, time.time()
        level = uvloop.run(run_level(host, int(port), mode, streams, seconds))
        wall = time.time() - wall0
        gen_cpu = (time.process_time() - cpu0) / wall
        server_cpu = ((cpu_seconds(pid) - server0) / wall) if pid else float("nan")
        row: dict[str, Any] = {
            "mode": mode, "streams": streams, "target_chunks_per_s": streams / PERIOD_S,
            "chunks_per_s": level.sent / (seconds - 1.0), "p50_ms": _pct(level.latencies, 50),
            "p99_ms": _pct(level.latencies, 99), "send_lag_p99_ms": _pct(level.lags, 99),
            "errors": level.errors, "generator_cpu": gen_cpu, "server_cpu": server_cpu,
        }  # fmt: skip
        rows.append(row)
        print(
            f"{mode:9s} {streams:4d} streams: {row['chunks_per_s']:7.1f}/{row['target_chunks_per_s']:.0f} "
            f"chunks/s  p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:7.2f} ms  send lag p99 "
            f"{row['send_lag_p99_ms']:6.2f} ms  errors {level.errors}  generator {gen_cpu:.0%} "
            f"of a core, server {server_cpu:.0%}",
            flush=True,
        )  # fmt: skip
        if _pct(level.latencies, 99) > budget_ms or level.errors:
            break
    return rows


@contextlib.contextmanager
def redis(work: Path) -> Iterator[tuple[str, int]]:
    """Debian's redis-server on a free loopback port (AOF, fsync every second): (URL, pid)."""
    port = free_port()
    folder = work / "redis"
    folder.mkdir(parents=True)
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
         "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
         "--logfile", str(folder / "log")]
    )  # fmt: skip
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0", proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def commit_quantiles(url: str) -> dict[str, float]:
    """p50 and p99 of the server's commits, from its histogram (linear within a bucket)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    buckets = sorted(
        (float(le), float(count))
        for le, count in re.findall(
            r'^rnn_serve_session_store_seconds_bucket\{le="([^"]+)",op="commit"\} (\S+)$',
            text, re.M,
        )
    )  # fmt: skip
    total = buckets[-1][1] if buckets else 0.0

    def quantile(q: float) -> float:
        below, lower = 0.0, 0.0
        for le, count in buckets:
            if count >= q * total and count > below:
                return 1000 * (lower + (le - lower) * (q * total - below) / (count - below))
            below, lower = count, le
        return float("nan")

    return {"p50": quantile(0.5), "p99": quantile(0.99), "commits": total}


def _floor(
    work: Path, port: int, levels: list[int], seconds: float, budget_ms: float
) -> list[dict[str, Any]]:
    """The grpc-floor mode: bench.grpc_echo on `port`, ramped like the grpc modes."""
    log = (work / "echo.log").open("wb")
    echo = subprocess.Popen([sys.executable, "-m", "bench.grpc_echo", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for_port(port)
        return ramp(f"http://127.0.0.1:{port}", echo.pid, "grpc-floor", levels, seconds, budget_ms)
    finally:
        echo.terminate()
        echo.wait(10)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server (default: start one)")
    parser.add_argument("--budget-ms", type=float, default=50.0)
    parser.add_argument("--step-s", type=float, default=8.0)
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)))
    parser.add_argument("--modes", default=MODES)
    parser.add_argument("--grpc", help="a running server's gRPC address, with --url")
    args = parser.parse_args()
    levels = [int(v) for v in args.levels.split(",")]
    # one connection per stream, for the generator and the server
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    results: dict[str, Any] = {"budget_ms": args.budget_ms, "step_s": args.step_s, "rows": []}
    for mode in args.modes.split(","):
        if args.url:
            url = f"http://{args.grpc}" if mode.startswith("grpc") and args.grpc else args.url
            results["rows"] += ramp(url, None, mode, levels, args.step_s, args.budget_ms)
            continue
        work = Path(tempfile.mkdtemp(prefix="rnn-serve-capacity-"))
        port = free_port()
        if mode == "grpc-floor":
            results["rows"] += _floor(work, port, levels, args.step_s, args.budget_ms)
            continue
        script = Path(sys.executable).with_name("rnn-serve")
        command = [str(script), "--host", "127.0.0.1", "--port", str(port)]
        grpc_port = free_port()
        env = {"RNN_SERVE_MODEL_REPOSITORY": str(work / "models"), "RNN_SERVE_LOG_LEVEL": "warning",
               "RNN_SERVE_GRPC_PORT": str(grpc_port)}  # fmt: skip
        with contextlib.ExitStack() as stack:
            redis_pid = None
            if mode.endswith("-redis"):
                env["RNN_SERVE_SESSION_STORE"], redis_pid = stack.enter_context(redis(work))
            url, pid = stack.enter_context(server(command, port, env, work / "server.log"))
            # (the ramp's target: the gRPC port for the gRPC modes; metrics stay on HTTP)
            target = f"http://127.0.0.1:{grpc_port}" if mode.startswith("grpc") else url
            redis0 = cpu_seconds(redis_pid) if redis_pid else 0.0
            wall0 = time.time()
            results["rows"] += ramp(target, pid, mode, levels, args.step_s, args.budget_ms)
            if redis_pid:
                suffix = "" if mode == "sessions-redis" else f"_{mode}"
                redis_cpu = (cpu_seconds(redis_pid) - redis0) / (time.time() - wall0)
                commits = commit_quantiles(url)
                results[f"redis_cpu{suffix}"], results[f"commit_ms{suffix}"] = redis_cpu, commits
                print(f"commit p50 {commits['p50']:.2f} ms, p99 {commits['p99']:.2f} ms; "
                      f"redis-server {redis_cpu:.0%} of a core", flush=True)  # fmt: skip
    for mode in args.modes.split(","):
        ok = [r for r in results["rows"] if r["mode"] == mode
              and r["p99_ms"] <= args.budget_ms and not r["errors"]]  # fmt: skip
        results[f"capacity_{mode}"] = max((r["streams"] for r in ok), default=0)
        print(f"{mode}: {results[f'capacity_{mode}']} streams within p99 {args.budget_ms:g} ms")
    if results.get("capacity_sessions"):
        ratio = results.get("capacity_sessions-redis", 0) / results["capacity_sessions"]
        results["redis_vs_memory"] = ratio
        print(f"sessions in Redis keep {ratio:.2f}x the streams of sessions in memory")
    pairs = [("sessions", "grpc"), ("sessions-redis", "grpc-redis"), ("sessions", "ws"),
             ("sessions-redis", "ws-redis")]  # fmt: skip
    for http_mode, grpc_mode in pairs:
        if results.get(f"capacity_{http_mode}") and f"capacity_{grpc_mode}" in results:
            ratio = results[f"capacity_{grpc_mode}"] / results[f"capacity_{http_mode}"]
            results[f"{grpc_mode}_vs_http"] = ratio
            print(f"{grpc_mode}: {ratio:.2f}x the streams of {http_mode} over HTTP")
    results["cpus"] = os.cpu_count()
    OUT.mkdir(exist_ok=True)
    (OUT / "capacity.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {OUT / 'capacity.json'} (make bench-publish copies it into bench/)")


if __name__ == "__main__":
    main()

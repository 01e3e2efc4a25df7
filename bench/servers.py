"""The HTTP server, measured: rnn-serve's app (a seed forward, nested JSON with h0) and the bare
FastAPI no-op, each under uvicorn (uvloop + httptools, what `rnn-serve` runs) and under granian
(Rust HTTP, ASGI, uvloop), with wrk at c=1 and c=64, in one run: req/s, p50/p99 and the server's
CPU per request.

    python -m bench.servers          # make bench-servers (needs wrk and granian)

Writes bench/out/servers.json.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.harness import OUT, cpu_seconds, free_port, server, wrk
from bench.run import SCENARIOS, body_for

SECONDS = 8.0


def commands(port: int) -> dict[str, tuple[list[str], str]]:
    python = sys.executable
    granian = [str(Path(python).with_name("granian")), "--interface", "asgi", "--loop", "uvloop",
               "--workers", "1", "--host", "127.0.0.1", "--port", str(port), "--log-level",
               "warning"]  # fmt: skip
    uvicorn = [python, "-m", "uvicorn", "--loop", "uvloop", "--http", "httptools", "--host",
               "127.0.0.1", "--port", str(port), "--log-level", "warning"]  # fmt: skip
    return {
        "rnn-serve / uvicorn": (
            [str(Path(python).with_name("rnn-serve")), "--host", "127.0.0.1", "--port", str(port)],
            "/v1/models/default/forward",
        ),
        "rnn-serve / granian": ([*granian, "--factory", "service.app:create_app"],
                                "/v1/models/default/forward"),
        "bare no-op / uvicorn": ([*uvicorn, "bench.baseline:app"], "/bare"),
        "bare no-op / granian": ([*granian, "bench.baseline:app"], "/bare"),
    }  # fmt: skip


def main() -> None:
    if not shutil.which("wrk") or not Path(sys.executable).with_name("granian").exists():
        sys.exit("needs wrk (apt-get install wrk) and granian (pip install granian)")
    work = Path(tempfile.mkdtemp(prefix="rnn-serve-servers-"))
    seed = next(s for s in SCENARIOS if s.model == "seed")
    body, _ = body_for(seed, "rnn-serve")
    body_file = work / "body.json"
    body_file.write_bytes(body)
    rows: list[dict[str, Any]] = []
    for name in commands(0):
        port = free_port()
        command, path = commands(port)[name]
        env = {"RNN_SERVE_MODEL_REPOSITORY": str(work / f"models-{port}"),
               "RNN_SERVE_LOG_LEVEL": "warning"}  # fmt: skip
        with server(command, port, env, work / f"{port}.log") as (url, pid):
            if "rnn-serve" in name:  # ready (the default model warm), then warmed by a short run
                while httpx.get(f"{url}/readyz").status_code != 200:
                    time.sleep(0.1)
                wrk(url + path, body_file, 1, 2.0)
            for c in (1, 64):
                cpu0, t0 = cpu_seconds(pid), time.time()
                figures = wrk(url + path, body_file, c, SECONDS)
                cpu = cpu_seconds(pid) - cpu0
                row = {"server": name, "concurrency": c, **figures,
                       "cpu_us_per_request": 1e6 * cpu / max(1, figures["requests"]),
                       "wall_s": time.time() - t0}  # fmt: skip
                rows.append(row)
                print(f"{name:22s} c={c:<3d} {row['rps']:8.0f} req/s  p50 {row['p50_ms']:6.2f} ms  "
                      f"p99 {row['p99_ms']:6.2f} ms  {row['cpu_us_per_request']:6.0f} µs CPU/req  "
                      f"errors {row['errors']}", flush=True)  # fmt: skip
    OUT.mkdir(exist_ok=True)
    (OUT / "servers.json").write_text(json.dumps(rows, indent=1))
    print(f"wrote {OUT / 'servers.json'}")


if __name__ == "__main__":
    main()

"""`make bench`: rnn-serve against a plain FastAPI baseline and a bare endpoint, under wrk.

Starts the real server as `make run` does (the rnn-serve command) and the baseline
(bench/baseline.py) under the same uvicorn settings, drives each from a separate wrk process on
loopback, measures the in-process torch forward for the same shapes (the floor), and writes
bench/REPORT.md and bench/throughput.png. Ratios come from this one run, on this machine.

    BENCH_SECONDS=6 python -m bench.run
    BENCH_COMPARE=<git ref> python -m bench.run   # also that commit's server, in the same run

CPU per request is the server's utime + stime (every thread, from /proc) over a run, divided by
the requests it answered: steadier than req/s on a shared machine.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
import torch

from bench import profile

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
OUT = BENCH / "out"  # what a run writes; bench/ holds the published run
SECONDS = float(os.environ.get("BENCH_SECONDS", "6"))
COMPARE = os.environ.get("BENCH_COMPARE", "")  # a git ref whose server runs beside ours
SHAPES = {"seed": (10, 20, 2), "big": (64, 128, 2), "large": (256, 512, 2)}


@dataclass(frozen=True)
class Scenario:
    name: str
    model: str
    seq_len: int
    batch: int
    encoding: str  # nested | b64
    concurrency: tuple[int, ...]
    targets: tuple[str, ...]


TWO = "rnn-serve ×2 front-ends"  # the same server with RNN_SERVE_FRONTENDS=2
SWEEP = (1, 4, 16, 64)  # every scenario, every server: the plot's x axis
SCENARIOS = (
    Scenario("seed 10→20 ×2, L=5, N=3, nested JSON + h0", "seed", 5, 3, "nested", SWEEP, ("rnn-serve", TWO, "baseline", "bare")),
    Scenario("64→128 ×2, L=50, N=1, nested JSON", "big", 50, 1, "nested", SWEEP, ("rnn-serve", TWO, "baseline", "bare")),
    Scenario("64→128 ×2, L=50, N=32, nested JSON", "big", 50, 32, "nested", SWEEP, ("rnn-serve", "baseline", "bare")),
    Scenario("64→128 ×2, L=50, N=32, base64", "big", 50, 32, "b64", SWEEP, ("rnn-serve", "bare")),
    Scenario("64→128 ×2, L=50, N=32, OIP v2 binary", "big", 50, 32, "binary", SWEEP, ("rnn-serve", "bare")),
    Scenario("64→128 ×2, L=50, N=32, flat JSON", "big", 50, 32, "flat", SWEEP, ("rnn-serve", "bare")),
)  # fmt: skip
# The figure that matters on a GPU (run only when one is there): many single sequences at once.
GPU_SCENARIOS = (
    Scenario("256→512 ×2, L=100, N=1, nested JSON (GPU)", "large", 100, 1, "nested", (1, 256), ("rnn-serve", "baseline", "bare")),
) if torch.cuda.is_available() else ()  # fmt: skip


@dataclass
class Result:
    scenario: str
    target: str
    concurrency: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    cpu_ms: float = 0.0  # server CPU per answered request
    mean_batch: float = 0.0  # sequences per forward inside rnn-serve during the run
    forward_us: float = 0.0  # in-process forward a request, at the batch size the run formed


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stat(pid: int | str) -> list[str]:
    # after the command: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of a process and of its descendants (front-end
    processes), alive or reaped."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                children.setdefault(int(_stat(entry)[1]), []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            total += sum(int(v) for v in _stat(current)[11:15])
            todo.extend(children.get(current, []))
    return total / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def server(
    command: list[str], port: int, env: dict[str, str], log: Path, cwd: Path = ROOT
) -> Iterator[tuple[str, int]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=cwd
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                sys.exit(f"{command[0]} exited:\n{log.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                sys.exit(f"{command[0]} never started:\n{log.read_text()}")
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def body_for(s: Scenario, target: str) -> tuple[bytes, int | None]:
    """The request body, and the binary extension's JSON header length (None for plain JSON).
    Every server gets the same body (the bare endpoint too); the seed shape carries h0."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((s.seq_len, s.batch, SHAPES[s.model][0])).astype(np.float32)
    state: dict[str, object] = {}
    if s.model == "seed":
        hidden, layers = SHAPES["seed"][1:]
        state["h0"] = rng.standard_normal((layers, s.batch, hidden)).astype(np.float32).tolist()
    if s.encoding == "binary":
        raw = x.tobytes()
        head = json.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "shape": list(x.shape),
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": len(raw)},
                    }
                ],
                "parameters": {"binary_data_output": True},
            }
        ).encode()
        return head + raw, len(head)
    if s.encoding == "flat":
        flat = {"shape": list(x.shape), "dtype": "float32", "data": x.ravel().tolist()}
        return json.dumps({"input": flat, "output_encoding": "flat"}).encode(), None
    if s.encoding == "b64":
        wire: object = {
            "shape": list(x.shape),
            "dtype": "float32",
            "b64": base64.b64encode(x.tobytes()).decode(),
        }
        return json.dumps({"input": wire, "output_encoding": "b64"}).encode(), None
    return json.dumps({"input": x.tolist(), **state}).encode(), None


def is_ours(target: str) -> bool:
    return target.startswith("rnn-serve")


def codec_us(s: Scenario) -> tuple[float, float]:
    """The codec alone for this scenario's body, in-process: (decode, encode) in µs a request,
    median of 5 rounds. Decode parses the body and makes the model's tensors; encode writes an
    answer of the right shapes in the form the body asked for (v1, or OIP for binary)."""
    import timeit

    from service.catalog.spec import ModelSpec
    from service.codecs.oip import OIPInfer
    from service.codecs.pipeline import Served
    from service.codecs.v1 import V1Forward
    from service.core.schemas.api import ForwardRequest
    from service.core.schemas.config import RNNConfig
    from service.engine.job import ForwardResult

    body, header = body_for(s, "rnn-serve")
    i, h, layers = SHAPES[s.model]
    config = RNNConfig(input_size=i, hidden_size=h, num_layers=layers)
    spec = ModelSpec(s.model, config, ((0, 0, 0), None))
    rng = np.random.default_rng(1)  # answers as a tanh RNN gives them: digits of real values
    result = ForwardResult(
        np.tanh(rng.standard_normal((s.seq_len, s.batch, h))).astype(np.float32),
        np.tanh(rng.standard_normal((layers, s.batch, h))).astype(np.float32),
    )

    def codec() -> V1Forward | OIPInfer:
        if header is None:
            return V1Forward(body, ForwardRequest)
        return OIPInfer(body, str(header))

    def decode() -> None:
        codec().decode(config, 1 << 30)

    done = codec()
    done.decode(config, 1 << 30)
    served = Served(spec, result, "cpu")

    def encode() -> None:
        done.encode(served)

    number = max(3, int(2000 / (1 + len(body) / 1024)))
    return tuple(  # type: ignore[return-value]
        statistics.median(timeit.timeit(f, number=number) / number for _ in range(5)) * 1e6
        for f in (decode, encode)
    )


def handoff_us(rounds: int = 5000) -> float:
    """CPU of one round trip from the event loop to the engine's worker thread and back, with
    nothing to run (µs): what a lone request pays on top of its forward."""

    import uvloop

    from service.engine.worker import Worker

    async def trips() -> float:
        worker = Worker("bench-worker")
        for _ in range(500):
            await worker.call(int)
        start = time.process_time()
        for _ in range(rounds):
            await worker.call(int)
        spent = time.process_time() - start
        worker.shutdown()
        return spent / rounds * 1e6

    return uvloop.run(trips())


def path_for(s: Scenario, target: str) -> str:
    if not is_ours(target):
        return {"baseline": f"/forward/{s.model}", "bare": "/bare"}[target]
    if s.encoding == "binary":
        return f"/v2/models/{s.model}/infer"
    return f"/v1/models/{s.model}/forward"


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {**_UNIT, "m": 60e3}[unit]


def wrk_command(
    url: str, body: Path, concurrency: int, seconds: float, header_length: int | None = None
) -> tuple[list[str], dict[str, str]]:
    """wrk's command line and environment for POSTing `body` to `url` (bench/post.lua)."""
    return (
        ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "10s", "--latency",
         "-s", str(BENCH / "post.lua"), url],
        {**os.environ, "BODY_FILE": str(body), "INFER_HEADER_LENGTH": str(header_length or ""),
         "CONTENT_TYPE": "application/octet-stream" if header_length else "application/json"},
    )  # fmt: skip


def wrk(
    url: str, body: Path, concurrency: int, seconds: float, header_length: int | None = None
) -> dict[str, float]:
    command, env = wrk_command(url, body, concurrency, seconds, header_length)
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    pct = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)\s*$", out, re.M))
    if len(pct) < 3:  # no request completed in time: report it, do not crash the whole run
        print(out, flush=True)
        pct = {"50": "0s", "90": "0s", "99": "0s"}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests = re.search(r"(\d+) requests in", out)
    socket_errors = re.search(r"Socket errors: (.*)$", out, re.M)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(pct["50"]),
        "p90_ms": _ms(pct["90"]),
        "p99_ms": _ms(pct["99"]),
        "errors": int(errors.group(1)) if errors else 0,
        "requests": int(requests.group(1)) if requests else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",  # type: ignore[dict-item]
    }


def floor_ms(model: str, seq_len: int, batch: int, runs: int = 300) -> float:
    """Median in-process forward time for this shape: no HTTP, no codec (same torch threads as
    the server uses)."""
    torch.manual_seed(0)
    rnn = torch.nn.RNN(*SHAPES[model]).eval()
    x = torch.randn(seq_len, batch, SHAPES[model][0])
    times = []
    with torch.inference_mode():
        for _ in range(20):
            rnn(x)
        for _ in range(runs):
            t = time.perf_counter()
            rnn(x)
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def batch_counts(url: str) -> tuple[float, float]:
    """(forwards, sequences) run so far, from rnn-serve's batch histogram."""
    found = dict(
        line.rsplit(" ", 1)
        for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines()
        if line.startswith("rnn_serve_batch_sequences_")
    )
    return (
        float(found.get("rnn_serve_batch_sequences_count", 0)),
        float(found.get("rnn_serve_batch_sequences_sum", 0)),
    )


def checkout(ref: str, into: Path) -> tuple[str, Path]:
    """The `service` package of commit `ref`, extracted (no work tree of ours is touched)."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    folder = into / f"compare-{sha}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", sha, "service"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return sha, folder


def main() -> None:
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk (make bench tries this itself)")
    work = Path(tempfile.mkdtemp(prefix="rnn-serve-bench-"))
    out_dir = OUT
    out_dir.mkdir(exist_ok=True)
    python = sys.executable
    ours_port, base_port, old_port, two_port = free_port(), free_port(), free_port(), free_port()
    script = Path(python).with_name("rnn-serve")
    ours_cmd = [str(script) if script.exists() else python, *([] if script.exists() else ["-m", "service"]),
                "--host", "127.0.0.1", "--port", str(ours_port)]  # fmt: skip
    base_cmd = [python, "-m", "uvicorn", "bench.baseline:app", "--host", "127.0.0.1", "--port",
                str(base_port), "--loop", "uvloop", "--http", "httptools", "--log-level", "warning"]  # fmt: skip
    results: list[Result] = []
    from service.core.settings import Settings
    from service.engine.device import torch_threads

    torch.set_num_threads(torch_threads(Settings()))
    floors = {
        (s.model, s.seq_len, s.batch): floor_ms(s.model, s.seq_len, s.batch) for s in SCENARIOS
    }
    batched64 = floor_ms("big", 50, 64)
    codecs = {s.name: codec_us(s) for s in SCENARIOS}
    handoff = handoff_us()
    print(
        f"in-process floors (ms): {floors}; 64→128 L=50 N=64 batched: {batched64:.3f} ms; "
        f"codec (decode, encode µs): {codecs}; loop-worker round trip {handoff:.1f} µs",
        flush=True,
    )
    batched: dict[tuple[str, int, int], float] = dict(floors)  # forwards at formed batch sizes

    def forward_us(s: Scenario, mean_batch: float) -> float:
        """The in-process forward's share of one request at the batch size the run formed."""
        sequences = max(s.batch, round(mean_batch))
        key = (s.model, s.seq_len, sequences)
        if key not in batched:
            batched[key] = floor_ms(s.model, s.seq_len, sequences, runs=60)
        return batched[key] * 1e3 * s.batch / sequences

    profiles: dict[str, dict[str, float]] = {}

    # The servers as `make run` starts them: the default settings (log level info included),
    # their logs to a file.
    env: dict[str, str] = {}
    two_cmd = [*ours_cmd[:-1], str(two_port)]
    with contextlib.ExitStack() as stack:
        servers = {
            "rnn-serve": stack.enter_context(server(
                ours_cmd, ours_port, {**env, "RNN_SERVE_MODEL_REPOSITORY": str(work / "models")},
                out_dir / "rnn-serve.log",
            )),
            TWO: stack.enter_context(server(
                two_cmd, two_port,
                {**env, "RNN_SERVE_MODEL_REPOSITORY": str(work / "two"),
                 "RNN_SERVE_FRONTENDS": "2"},
                out_dir / "rnn-serve-x2.log",
            )),
            "baseline": stack.enter_context(server(base_cmd, base_port, {}, out_dir / "baseline.log")),
        }  # fmt: skip
        servers["bare"] = servers["baseline"]
        compared = ""
        if COMPARE:
            sha, folder = checkout(COMPARE, out_dir)
            compared = f"rnn-serve@{sha}"
            old_cmd = [python, "-m", "service", "--host", "127.0.0.1", "--port", str(old_port)]
            servers[compared] = stack.enter_context(server(
                old_cmd, old_port,
                {**env, "PYTHONPATH": str(folder), "RNN_SERVE_MODEL_REPOSITORY": str(work / "old")},
                out_dir / f"{compared}.log", cwd=folder,
            ))  # fmt: skip
        for target, (url, _) in servers.items():
            if not is_ours(target):
                continue
            while httpx.get(f"{url}/readyz").status_code != 200:
                time.sleep(0.1)
            for name, sizes in SHAPES.items():
                config = dict(zip(("input_size", "hidden_size", "num_layers"), sizes, strict=True))
                httpx.post(
                    f"{url}/v1/models", json={"name": name, "config": config}, timeout=30
                ).raise_for_status()
        for s in (*SCENARIOS, *GPU_SCENARIOS):
            targets = list(s.targets)
            if compared and "rnn-serve" in targets:  # right after ours, to share the conditions
                targets.insert(targets.index("rnn-serve") + 1, compared)
            for target in targets:
                url, pid = servers[target]
                body = work / f"{s.model}-{s.batch}-{s.encoding}-{target}.json"
                content, header_length = body_for(s, target)
                body.write_bytes(content)
                url += path_for(s, target)
                headers = {"content-type": "application/json"}
                if header_length:  # the OIP binary extension
                    headers = {
                        "content-type": "application/octet-stream",
                        "Inference-Header-Content-Length": str(header_length),
                    }
                check = httpx.post(url, content=content, headers=headers, timeout=60)
                assert check.status_code == 200, check.text[:300]
                if target != "bare" and not header_length:
                    assert check.json()["output_shape"] == [s.seq_len, s.batch, SHAPES[s.model][1]]
                wrk(url, body, s.concurrency[0], 1, header_length)  # warm-up
                for c in s.concurrency:
                    root = servers[target][0]
                    batches0 = batch_counts(root) if is_ours(target) else (0.0, 0.0)
                    cpu0 = cpu_seconds(pid)
                    m = wrk(url, body, c, SECONDS, header_length)
                    cpu = cpu_seconds(pid) - cpu0
                    batches1 = batch_counts(root) if is_ours(target) else (0.0, 0.0)
                    forwards = batches1[0] - batches0[0]
                    mean_batch = (batches1[1] - batches0[1]) / forwards if forwards else 0.0
                    r = Result(
                        s.name, target, c, m["rps"], m["p50_ms"], m["p90_ms"], m["p99_ms"],
                        int(m["errors"]),
                        cpu_ms=1e3 * cpu / max(1, int(m["requests"])),
                        mean_batch=mean_batch,
                        forward_us=forward_us(s, mean_batch) if is_ours(target) else 0.0,
                    )  # fmt: skip
                    results.append(r)
                    print(
                        f"{s.name:45s} {target:18s} c={c:<3d} {r.rps:9.1f} req/s  p50 {r.p50_ms:8.2f} ms  "
                        f"p99 {r.p99_ms:8.2f} ms  cpu {r.cpu_ms:6.3f} ms/req  batch {r.mean_batch:5.1f}  errors {r.errors}",
                        flush=True,
                    )  # fmt: skip
                if target == "rnn-serve":  # where its CPU goes: a separate run under py-spy
                    c = s.concurrency[-1]
                    command, wrk_env = wrk_command(url, body, c, SECONDS + 2, header_length)
                    load = subprocess.Popen(command, env=wrk_env, stdout=subprocess.DEVNULL)
                    time.sleep(1)
                    shares = profile.record(
                        pid, SECONDS, out_dir / f"profile-{s.model}-{s.batch}-{s.encoding}.txt"
                    )
                    load.wait()
                    if shares:
                        profiles[s.name] = shares
                        print(f"{s.name:45s} profile at c={c}: " + ", ".join(
                            f"{k} {v:.0%}" for k, v in shares.items()), flush=True)  # fmt: skip
        ours = servers["rnn-serve"][0]
        streaming = [
            json.loads(line)
            for line in subprocess.run(
                [python, "-m", "bench.streaming", ours, "32", "30"],
                capture_output=True, text=True, check=True, cwd=ROOT,
            ).stdout.splitlines()
        ]  # fmt: skip
        for row in streaming:
            print(
                f"streaming {row['mode']:9s} {row['chunks_per_s']:8.1f} chunks/s  p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms",
                flush=True,
            )
        metrics = httpx.get(f"{ours}/metrics").text
    (out_dir / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    inputs = {
        "floors": [[*k, v] for k, v in floors.items()],
        "batched64": batched64,
        "metrics": metrics,
        "streaming": streaming,
        "codecs": codecs,
        "compared": compared,
        "handoff": handoff,
        "profiles": profiles,
    }
    (out_dir / "report-inputs.json").write_text(json.dumps(inputs))  # fmt: skip
    write_report(
        results, floors, batched64, metrics, streaming, codecs, compared, handoff, profiles
    )
    shutil.rmtree(work, ignore_errors=True)


def _get(results: list[Result], scenario: Scenario, target: str, c: int) -> Result:
    return next(
        r
        for r in results
        if r.scenario == scenario.name and r.target == target and r.concurrency == c
    )


def floor_us(
    results: list[Result], s: Scenario, c: int, codecs: dict[str, tuple[float, float]]
) -> float:
    """The unavoidable CPU of one request at concurrency c: the bare no-op's HTTP, the codec
    in-process, and the in-process forward's share at the batch size the run formed (µs)."""
    bare = _get(results, s, "bare", c).cpu_ms * 1e3
    decode, encode = codecs[s.name]
    return bare + decode + encode + _get(results, s, "rnn-serve", c).forward_us


def write_report(
    results: list[Result],
    floors: dict[tuple[str, int, int], float],
    batched64: float,
    metrics: str,
    streaming: list[dict[str, float]],
    codecs: dict[str, tuple[float, float]],
    compared: str = "",
    handoff: float = 0.0,
    profiles: dict[str, dict[str, float]] | None = None,
) -> None:
    seed, big, large_json, large_b64, large_v2, _large_flat = SCENARIOS
    profiles = profiles or {}
    top = SWEEP[-1]

    def at(s: Scenario, target: str, c: int) -> Result:
        return _get(results, s, target, c)

    def ours(s: Scenario, c: int) -> Result:
        return at(s, "rnn-serve", c)

    def bare(s: Scenario, c: int) -> Result:
        return at(s, "bare", c)

    def base(s: Scenario, c: int) -> Result:
        return at(s, "baseline", c)

    def tail(r: Result) -> float:
        return r.p99_ms / r.p50_ms if r.p50_ms else float("inf")

    def ratio(s: Scenario, c: int) -> float:
        return ours(s, c).cpu_ms * 1e3 / floor_us(results, s, c, codecs)

    def p50_bound(s: Scenario) -> float:
        """c=1: bare's p50 + the in-process forward + the codec + 100 µs (ms)."""
        return bare(s, 1).p50_ms + (ours(s, 1).forward_us + sum(codecs[s.name]) + 100) / 1e3

    def worst_tail(s: Scenario) -> tuple[float, int]:
        return max((tail(ours(s, c)), c) for c in s.concurrency)

    big_floor = floors[("big", 50, 1)]
    large_floor = floors[("big", 50, 32)]
    bodies = {s.name: len(body_for(s, "rnn-serve")[0]) for s in SCENARIOS}

    def kib(s: Scenario) -> str:
        return f"{bodies[s.name] / 1024:.1f} KiB"

    short = {s.name: s.name.split(", ", 1)[0] + ", " + s.name.split(", ")[2] + ", " + s.encoding
             for s in SCENARIOS}  # fmt: skip
    checks = [
        (f"seed, c={top}: overhead ratio, rnn-serve's CPU a request / the floor", ratio(seed, top), "≤ 1.25"),
        (f"64→128 N=1, c={top}: overhead ratio", ratio(big, top), "≤ 1.25"),
        *[(f"{short[s.name]}, c=1: p50 ms against bare p50 + forward + codec + 0.1 ms "
           f"({p50_bound(s):.2f} ms)", ours(s, 1).p50_ms, f"≤ {p50_bound(s):.2f}") for s in SCENARIOS],
        *[(f"{short[s.name]}: worst p99 / p50 of rnn-serve (at c={worst_tail(s)[1]})",
           worst_tail(s)[0], "≤ 3") for s in SCENARIOS],
    ]  # fmt: skip
    more = [
        (f"seed, c={top}: rnn-serve / bare FastAPI no-op req/s (the same {kib(seed)} body)", ours(seed, top).rps / bare(seed, top).rps, ""),
        (f"64→128 N=1, c={top}: rnn-serve / bare no-op req/s (the same {kib(big)} body)", ours(big, top).rps / bare(big, top).rps, ""),
        (f"seed, c={top}: two front-ends / one, req/s", at(seed, TWO, top).rps / ours(seed, top).rps, "> 1 pays"),
        (f"seed, c={top}: rnn-serve / plain FastAPI baseline req/s", ours(seed, top).rps / base(seed, top).rps, ""),
        (f"64→128 N=1, c={top}: rnn-serve / plain FastAPI baseline req/s", ours(big, top).rps / base(big, top).rps, ""),
        ("N=32, c=1: v1 nested JSON p50 / OIP v2 binary p50", ours(large_json, 1).p50_ms / ours(large_v2, 1).p50_ms, "> 1"),
        ("N=32, c=1: OIP v2 binary p50 / in-process forward", ours(large_v2, 1).p50_ms / large_floor, "≤ 2"),
        ("N=32, c=1: base64 p50 / in-process forward", ours(large_b64, 1).p50_ms / large_floor, "≤ 2"),
    ]  # fmt: skip
    for s in GPU_SCENARIOS:
        more.append((f"{s.name}, c=256: rnn-serve / baseline req/s (the same card)",
                     ours(s, 256).rps / base(s, 256).rps, "(the GPU figure)"))  # fmt: skip

    def mark(value: float, target: str) -> str:
        if not target.startswith(("≤", ">")):
            return ""
        bound = float(target.split()[1])
        met = value <= bound if target.startswith("≤") else value > bound
        return "met" if met else "not met"

    floor_rows = []
    for s in SCENARIOS:
        decode, encode = codecs[s.name]
        for c in s.concurrency:
            r = ours(s, c)
            floor_rows.append(
                f"| {s.name} | {c} | {bare(s, c).cpu_ms * 1e3:.0f} | {decode:.0f} | {encode:.0f} | "
                f"{r.forward_us:.0f} ({max(s.batch, round(r.mean_batch))}) | "
                f"{floor_us(results, s, c, codecs):.0f} | {r.cpu_ms * 1e3:.0f} | {ratio(s, c):.2f} |"
            )
    stage_rows = []
    for s in SCENARIOS:
        shares = profiles.get(s.name)
        if not shares:
            continue
        cpu = ours(s, top).cpu_ms * 1e3
        stage_rows.append(
            f"| {s.name} | {cpu:.0f} | "
            + " | ".join(f"{cpu * shares[k]:.0f} ({shares[k]:.0%})" for k in profile.STAGES)
            + " |"
        )
    lines = [
        "# rnn-serve benchmark",
        "",
        f"`make bench` on {platform.machine()} with {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads; wrk (1 thread) on loopback, {SECONDS:g} s a run. "
        "Servers, the baseline and the load generator share the same cores, so absolute figures "
        "are modest; the ratios, all from this one run, are the point. rnn-serve runs as `make run` "
        "starts it (default settings, logging at info to a file); `rnn-serve ×2 front-ends` is the "
        "same with RNN_SERVE_FRONTENDS=2. `bare` is a FastAPI route that reads the body and returns "
        "a constant; `baseline` a plain FastAPI RNN endpoint (bench/baseline.py). CPU a request is "
        "utime + stime of the server's every process and thread over the run, per answered request.",
        "",
        "<!-- --8<-- [start:floor] -->",
        "## Targets",
        "",
        "The floor of a request is the work it cannot skip: the bare no-op's CPU a request (HTTP), "
        "the codec in-process (decode and encode of that body) and the in-process forward's share "
        "at the batch size the run formed. The overhead ratio is rnn-serve's CPU a request over "
        "that floor.",
        "",
        "| check | measured | target | |",
        "|---|---|---|---|",
        *[f"| {name} | {value:.2f} | {target} | {mark(value, target)} |" for name, value, target in checks],
        "",
        "| more ratios from the same run | measured | note |",
        "|---|---|---|",
        *[f"| {name} | {value:.2f} | {target} |" for name, value, target in more],
        "",
        "## The floor, and rnn-serve's CPU against it",
        "",
        "µs of CPU a request. bare: the no-op's whole request at the same concurrency; decode and "
        "encode: the codec alone, in-process, for this body and an answer of its shapes; forward: "
        "the in-process forward at the batch size rnn-serve formed in that run (sequences a forward "
        "in brackets), divided among the requests that shared it.",
        "",
        "| scenario | c | bare | decode | encode | forward (seqs) | floor | rnn-serve | ratio |",
        "|---|---|---|---|---|---|---|---|---|",
        *floor_rows,
        "",
        "Request bodies: " + "; ".join(f"{short[x.name]} {kib(x)}" for x in SCENARIOS) + ".",
        "",
        f"One round trip from the event loop to the engine's worker thread and back, with nothing "
        f"to run, costs {handoff:.0f} µs of CPU in-process: every forward pays it once, whatever "
        "its batch.",
        "",
        f"In-process forwards, one request at a time: seed {floors[('seed', 5, 3)]:.3f} ms; 64→128 "
        f"L=50 N=1 {big_floor:.3f} ms; N=32 {large_floor:.3f} ms; N=64 {batched64:.3f} ms "
        f"({64000 / batched64:.0f} sequences/s).",
        "",
        f"## Where rnn-serve's CPU goes (py-spy, c={top})",
        "",
        "A separate run of each scenario under `py-spy record` (bench/profile.py), its samples "
        "split by stage and multiplied by the CPU a request of the measured run: µs a request "
        "(share of the samples). HTTP is uvicorn, httptools and the loop's I/O; edge the ASGI edge, "
        "routing and auth; codec the body's parse, the tensors' decode and the answer's encoding; "
        "admission the data plane (deadline, admission gate, model lookup, validation); queue "
        "hand-off the batcher, futures and the worker's wake-ups; worker the forward in the engine "
        "thread; metrics and logs the Prometheus counters, the access log and tracing.",
        "",
        "| scenario | CPU µs/req | " + " | ".join(profile.STAGES) + " |",
        "|---|---|" + "---|" * len(profile.STAGES),
        *stage_rows,
        "<!-- --8<-- [end:floor] -->",
        "",
        "![the floor against rnn-serve's CPU by stage, every scenario](overhead.png)",
        "",
        *comparison(results, compared),
        "## Streaming: sessions against the stateless equivalent",
        "",
        "32 concurrent streams of the seed model, 30 chunks of 5 steps each (base64 tensors), from "
        "a separate httpx process (`bench/streaming.py`); stateless = the client ships h0 and "
        "reads h_n on every call. Two alternating rounds each.",
        "",
        "| mode | chunks/s | p50 ms | p99 ms |",
        "|---|---|---|---|",
        *[f"| {r['mode']} | {r['chunks_per_s']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |" for r in streaming],
        "",
        *capacity_section(),
        *measured_by_hand(),
        "## All runs",
        "",
        "| scenario | server | concurrency | req/s | p50 ms | p90 ms | p99 ms | CPU ms/req | seqs/forward | non-2xx |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *[f"| {r.scenario} | {r.target} | {r.concurrency} | {r.rps:.1f} | {r.p50_ms:.2f} | {r.p90_ms:.2f} | {r.p99_ms:.2f} | {r.cpu_ms:.3f} | "
          + (f"{r.mean_batch:.1f}" if is_ours(r.target) else "—") + f" | {r.errors} |" for r in results],
        "",
        "![requests per second against concurrency, every scenario](throughput.png)",
        "",
        "![one payload in each wire form: nested, flat, base64, OIP binary](encodings.png)",
        "",
    ]  # fmt: skip
    (OUT / "REPORT.md").write_text("\n".join(lines))
    plot(results, floors)
    plot_overhead(results, codecs, profiles)
    print("\n".join(lines[8 : 16 + len(checks)]))
    print(f"wrote {OUT / 'REPORT.md'} and {OUT / 'throughput.png'} (make bench-publish copies "
          "them into bench/)")  # fmt: skip


def capacity_section() -> list[str]:
    """The capacity benchmark's figures (`python -m bench.capacity` writes bench/capacity.json)."""
    path = OUT / "capacity.json"
    if not path.exists():
        path = BENCH / "capacity.json"  # the published run
    if not path.exists():
        return []
    cap = json.loads(path.read_text())
    budget = cap["budget_ms"]
    return [
        "## Capacity: real-time streams within a p99 budget",
        "",
        "<!-- --8<-- [start:capacity] -->",
        f"Streams of the seed model, each sending a chunk of 10 steps every 50 ms (20 chunks/s), "
        f"open loop (latency counted from when a chunk was due), ramped until the p99 passed "
        f"{budget:g} ms; {cap['step_s']:g} s a level, the first second not counted "
        "(`python -m bench.capacity`). sessions: the server holds the state, chunks carry "
        "start_step; stateless: /v1/models/default/forward with h0 = the previous answer's h_n. "
        "The load generator (one process, raw HTTP/1.1 on keep-alive connections) shares the "
        f"machine's {cap.get('cpus', '?')} CPUs with the server: its own CPU and how late it sent "
        "chunks are in the table, to show it was not the bottleneck.",
        "",
        f"**sessions: {cap.get('capacity_sessions', 0)} streams; stateless: "
        f"{cap.get('capacity_stateless', 0)} streams** within p99 {budget:g} ms.",
        "",
        "| mode | streams | chunks/s (target) | p50 ms | p99 ms | send lag p99 ms | errors | generator CPU | server CPU |",
        "|---|---|---|---|---|---|---|---|---|",
        *[f"| {r['mode']} | {r['streams']} | {r['chunks_per_s']:.0f} ({r['target_chunks_per_s']:.0f}) | "
          f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['send_lag_p99_ms']:.2f} | {r['errors']} | "
          f"{r['generator_cpu']:.0%} | {r['server_cpu']:.0%} |" for r in cap["rows"]],
        "<!-- --8<-- [end:capacity] -->",
        "",
    ]  # fmt: skip


def comparison(results: list[Result], compared: str) -> list[str]:
    """The report's section on the current code against the commit BENCH_COMPARE named."""
    if not compared:
        return []
    rows = []
    for old in (r for r in results if r.target == compared):
        new = next(
            r for r in results
            if (r.scenario, r.target, r.concurrency) == (old.scenario, "rnn-serve", old.concurrency)
        )  # fmt: skip
        rows.append(
            f"| {old.scenario} | {old.concurrency} | {new.rps:.1f} / {old.rps:.1f} = "
            f"{new.rps / old.rps:.2f} | {new.p99_ms:.2f} / {old.p99_ms:.2f} | "
            f"{new.cpu_ms:.3f} / {old.cpu_ms:.3f} = {new.cpu_ms / old.cpu_ms:.2f} |"
        )
    return [
        f"## Against {compared.removeprefix('rnn-serve@')} (the same run)",
        "",
        f"The server of commit `{compared.removeprefix('rnn-serve@')}` (BENCH_COMPARE), driven "
        "right after the current one with the same bodies. Ratios above 1 in req/s, and below 1 "
        "in CPU per request, mean the current code is faster.",
        "",
        "| scenario | c | req/s now / then | p99 ms now / then | CPU ms/req now / then |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]


def plot(results: list[Result], floors: dict[tuple[str, int, int], float]) -> None:
    """throughput.png: requests per second against concurrency, one panel a scenario, one line a
    server, with the in-process forward (one at a time) as a dashed line; encodings.png: the
    four wire forms of one payload side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(2, 3, figsize=(14, 9))
    axes = list(grid.flat)
    styles = {"rnn-serve": "C0", TWO: "C1", "bare": "C2", "baseline": "C3"}
    for ax, s in zip(axes, SCENARIOS, strict=False):
        targets = dict.fromkeys(r.target for r in results if r.scenario == s.name)
        for target in targets:
            runs = sorted(
                (r for r in results if r.scenario == s.name and r.target == target),
                key=lambda r: r.concurrency,
            )
            label = "bare FastAPI no-op" if target == "bare" else target
            ax.plot([r.concurrency for r in runs], [r.rps for r in runs], marker="o",
                    color=styles.get(target, "C4"), label=label)  # fmt: skip
        floor_ms = floors.get((s.model, s.seq_len, s.batch))
        if floor_ms:
            ax.axhline(1e3 / floor_ms, color="k", linestyle="--", linewidth=1,
                       label="in-process forward, one at a time")  # fmt: skip
        ax.set_title(s.name.replace(", ", "\n", 1), fontsize=9)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrent connections")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in (axes[0], axes[3]):
        ax.set_ylabel("requests / s (log)")
    fig.suptitle("rnn-serve, the bare FastAPI no-op and the FastAPI baseline: same bodies, one run")
    fig.tight_layout()
    fig.savefig(OUT / "throughput.png", dpi=110)
    plt.close(fig)

    # The encodings of one payload (64→128, L=50, N=32) side by side.
    forms = [s for s in SCENARIOS if s.model == "big" and s.batch == 32]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [s.encoding for s in forms]
    for ax, c, what in ((left, 1, "p50 ms at c=1 (lower is better)"),
                        (right, 16, "requests / s at c=16 (higher is better)")):  # fmt: skip
        values = []
        for s in forms:
            r = next((r for r in results if r.scenario == s.name and r.target == "rnn-serve"
                      and r.concurrency == c), None)  # fmt: skip
            values.append(0.0 if r is None else (r.p50_ms if c == 1 else r.rps))
        bars = ax.bar(names, values, color=["C3", "C0", "C2", "C1"][: len(names)])
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
        ax.set_title(what, fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    floor_ms = floors.get(("big", 50, 32))
    if floor_ms:
        left.axhline(floor_ms, color="k", linestyle="--", linewidth=1, label="in-process forward")
        left.legend(fontsize=8)
    fig.suptitle("64→128 ×2, L=50, N=32: one payload in each wire form (rnn-serve, one run)")
    fig.tight_layout()
    fig.savefig(OUT / "encodings.png", dpi=110)
    plt.close(fig)


def plot_overhead(
    results: list[Result],
    codecs: dict[str, tuple[float, float]],
    profiles: dict[str, dict[str, float]],
) -> None:
    """overhead.png: for every scenario at the top concurrency, the floor (bare HTTP, decode,
    encode, forward) beside rnn-serve's CPU a request split by stage (py-spy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = SWEEP[-1]
    # three panels a row, at a size whose labels read at a page's width
    rows = -(-len(SCENARIOS) // 3)
    fig, grid = plt.subplots(rows, 3, figsize=(11, 4.2 * rows + 1.2), squeeze=False)
    axes = list(grid.ravel())
    for spare in axes[len(SCENARIOS) :]:
        spare.set_visible(False)
    axes = axes[: len(SCENARIOS)]
    floor_parts = ("bare HTTP", "decode", "encode", "forward")
    floor_colors = ("#bbbbbb", "#8fbbd9", "#a6d49f", "#f4b183")
    for ax, s in zip(axes, SCENARIOS, strict=True):
        r = _get(results, s, "rnn-serve", c)
        decode, encode = codecs[s.name]
        values = (_get(results, s, "bare", c).cpu_ms * 1e3, decode, encode, r.forward_us)
        bottom = 0.0
        for value, color, label in zip(values, floor_colors, floor_parts, strict=True):
            ax.bar(0, value, 0.7, bottom=bottom, color=color, label=f"floor: {label}")
            bottom += value
        cpu, shares = r.cpu_ms * 1e3, profiles.get(s.name)
        bottom = 0.0
        for i, stage in enumerate(profile.STAGES if shares else ("all",)):
            part = cpu * shares[stage] if shares else cpu
            ax.bar(1, part, 0.7, bottom=bottom, color=f"C{i}", label=f"rnn-serve: {stage}")
            bottom += part
        ax.set_xticks([0, 1])
        ax.set_xticklabels(["floor", "rnn-serve"], fontsize=10)
        ax.set_title(s.name.replace(", ", "\n", 2), fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    for ax in axes[::3]:
        ax.set_ylabel(f"CPU µs a request at c={c}")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=9)
    fig.suptitle("The floor of each request beside rnn-serve's CPU a request by stage (one run)")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(OUT / "overhead.png", dpi=110)
    plt.close(fig)


def measured_by_hand() -> list[str]:
    """The dated figures of the benchmarks run outside this one (fairness, soak), kept in
    bench/MEASURED.md, so that every published report carries them."""
    path = BENCH / "MEASURED.md"
    return [path.read_text(), ""] if path.exists() else []


def report_again() -> None:
    """`python -m bench.run --report`: rewrite the report from the last run's saved figures."""
    out_dir = OUT
    results = [Result(**r) for r in json.loads((out_dir / "results.json").read_text())]
    saved = json.loads((out_dir / "report-inputs.json").read_text())
    floors = {(m, int(length), int(n)): float(v) for m, length, n, v in saved["floors"]}
    codecs = {k: (float(v[0]), float(v[1])) for k, v in saved["codecs"].items()}
    write_report(results, floors, saved["batched64"], saved["metrics"], saved["streaming"],
                 codecs, saved["compared"], saved.get("handoff", 0.0),
                 saved.get("profiles", {}))  # fmt: skip


def publish() -> None:
    """`python -m bench.run --publish` (make bench-publish): the last run's report, plot and
    capacity figures become the committed ones in bench/ — on purpose, never as a side effect."""
    for name in ("REPORT.md", "throughput.png", "encodings.png", "overhead.png", "capacity.json"):
        if (OUT / name).exists():
            shutil.copyfile(OUT / name, BENCH / name)
            print(f"published bench/{name}")


def replot_published() -> None:
    """`python -m bench.run --replot`: bench/overhead.png drawn again from the figures of the
    published report's own tables (the floor and the stage split, at the top concurrency), for
    a change of the plot's layout that needs no new run."""
    global OUT
    text = (BENCH / "REPORT.md").read_text()
    c, names = SWEEP[-1], {s.name for s in SCENARIOS}
    results, codecs, profiles = [], {}, {}
    for row in text.splitlines():
        cells = [x.strip() for x in row.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[0] in names and cells[1] == str(c):
            bare, decode, encode = (float(x) for x in cells[2:5])
            forward, ours = float(cells[5].split()[0]), float(cells[7])
            results += [
                Result(cells[0], "bare", c, 0, 0, 0, 0, 0, cpu_ms=bare / 1e3),
                Result(cells[0], "rnn-serve", c, 0, 0, 0, 0, 0, cpu_ms=ours / 1e3,
                       forward_us=forward),
            ]  # fmt: skip
            codecs[cells[0]] = (decode, encode)
        elif len(cells) == 2 + len(profile.STAGES) and cells[0] in names and "%)" in cells[2]:
            parts = [float(x.split()[0]) if x[:1].isdigit() else 0.0 for x in cells[2:]]
            profiles[cells[0]] = {
                k: v / sum(parts) for k, v in zip(profile.STAGES, parts, strict=True)
            }
    OUT, out = BENCH, OUT
    try:
        plot_overhead(results, codecs, profiles)
    finally:
        OUT = out
    print("wrote bench/overhead.png from bench/REPORT.md's figures")


if __name__ == "__main__":
    if sys.argv[1:] == ["--report"]:
        report_again()
    elif sys.argv[1:] == ["--replot"]:
        replot_published()
    elif sys.argv[1:] == ["--publish"]:
        publish()
    else:
        main()

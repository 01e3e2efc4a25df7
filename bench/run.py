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
import functools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import httpx
import numpy as np
import torch

from bench import profile
from bench.harness import (
    MIN_ANSWERS_PER_CLIENT,
    OUT,
    ROOT,
    SECONDS,
    Result,
    batch_counts,
    checkout,
    cpu_seconds,
    free_port,
    reliable,
    server,
    wrk,
    wrk_command,
)

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))  # alternated rounds a figure is the median of
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


def ideal_codec_us(s: Scenario) -> tuple[float, float]:
    """The floor's codec, independent of rnn-serve's: (decode, encode) in µs a request, median
    of 5 rounds. JSON: `orjson.loads` and `np.asarray` per tensor in, `orjson.dumps` with
    OPT_SERIALIZE_NUMPY out; base64 and OIP binary: the bare `b64decode`/`frombuffer` and
    `tobytes`/`b64encode` work around one `orjson` envelope."""
    import timeit

    import orjson

    body, header = body_for(s, "rnn-serve")
    _, h, layers = SHAPES[s.model]
    rng = np.random.default_rng(1)
    out = np.tanh(rng.standard_normal((s.seq_len, s.batch, h))).astype(np.float32)
    h_n = np.tanh(rng.standard_normal((layers, s.batch, h))).astype(np.float32)
    dumps, numpy = orjson.dumps, orjson.OPT_SERIALIZE_NUMPY

    def decode() -> None:
        if header is not None:
            orjson.loads(body[:header])
            np.frombuffer(body[header:], np.float32)
            return
        doc = orjson.loads(body)
        for name in ("input", "h0"):
            value = doc.get(name)
            if value is None:
                continue
            if s.encoding == "b64":
                np.frombuffer(base64.b64decode(value["b64"]), np.float32).reshape(value["shape"])
            elif s.encoding == "flat":
                np.asarray(value["data"], np.float32).reshape(value["shape"])
            else:
                np.asarray(value, np.float32)

    def wire(arr: np.ndarray) -> object:
        if s.encoding == "b64":
            return {
                "shape": arr.shape,
                "dtype": "float32",
                "b64": base64.b64encode(arr.tobytes()).decode(),
            }
        if s.encoding == "flat":
            return {"shape": arr.shape, "dtype": "float32", "data": arr.ravel()}
        return arr

    def encode() -> None:
        if header is not None:
            meta = [{"name": n, "datatype": "FP32", "shape": a.shape,
                     "parameters": {"binary_data_size": a.nbytes}} for n, a in (("output", out), ("h_n", h_n))]  # fmt: skip
            dumps({"outputs": meta}) + out.tobytes() + h_n.tobytes()
            return
        dumps({"output": wire(out), "h_n": wire(h_n), "output_shape": out.shape,
               "h_n_shape": h_n.shape}, option=numpy)  # fmt: skip

    number = max(3, int(2000 / (1 + len(body) / 1024)))
    return tuple(  # type: ignore[return-value]
        statistics.median(timeit.timeit(f, number=number) / number for _ in range(5)) * 1e6
        for f in (decode, encode)
    )


MAX_SECONDS = float(os.environ.get("BENCH_MAX_SECONDS", "40"))  # a rerun round's longest


def _round(
    s: Scenario, target: str, c: int, url: str, body: Path, header_length: int | None,
    root: str, pid: int, seconds: float,
) -> Result:  # fmt: skip
    """One wrk run against one server: its rates, latencies and CPU a request."""
    batches0 = batch_counts(root) if is_ours(target) else (0.0, 0.0)
    cpu0 = cpu_seconds(pid)
    m = wrk(url, body, c, seconds, header_length)
    cpu = cpu_seconds(pid) - cpu0
    batches1 = batch_counts(root) if is_ours(target) else (0.0, 0.0)
    forwards = batches1[0] - batches0[0]
    mean_batch = (batches1[1] - batches0[1]) / forwards if forwards else 0.0
    return Result(
        s.name, target, c, m["rps"], m["p50_ms"], m["p90_ms"], m["p99_ms"], int(m["errors"]),
        cpu_ms=1e3 * cpu / max(1, int(m["requests"])), mean_batch=mean_batch, seconds=seconds,
    )  # fmt: skip


def rerun_seconds(r: Result) -> float:
    """How long a round that answered too few requests a connection runs again: long enough for
    a quarter more than the fewest readable at its rate, at most BENCH_MAX_SECONDS."""
    answered = max(r.rps * r.seconds, 1.0)
    wanted = 1.25 * MIN_ANSWERS_PER_CLIENT * r.concurrency
    longer = max(2 * r.seconds, r.seconds * wanted / answered)
    return float(min(MAX_SECONDS, math.ceil(longer)))  # wrk takes whole seconds


def median_result(rounds: list[Result]) -> Result:
    """One figure from alternated rounds: the median of each measure (errors: their sum)."""

    def med(field: str) -> float:
        return float(statistics.median(getattr(r, field) for r in rounds))

    first = rounds[0]
    return Result(
        first.scenario, first.target, first.concurrency, med("rps"), med("p50_ms"),
        med("p90_ms"), med("p99_ms"), sum(r.errors for r in rounds), cpu_ms=med("cpu_ms"),
        mean_batch=med("mean_batch"), seconds=min(r.seconds for r in rounds),
    )  # fmt: skip


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


def main() -> None:
    from bench.report import write_report  # (the report imports the scenarios from here)

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
    codecs = {s.name: ideal_codec_us(s) for s in SCENARIOS}  # the floor's
    own = {s.name: codec_us(s) for s in SCENARIOS}  # rnn-serve's, shown beside it
    handoff = handoff_us()
    print(
        f"in-process floors (ms): {floors}; 64→128 L=50 N=64 batched: {batched64:.3f} ms; "
        f"ideal codec (decode, encode µs): {codecs}; rnn-serve's codec: {own}; loop-worker round trip {handoff:.1f} µs",
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
            prepared: dict[str, tuple[str, Path, int | None]] = {}
            for target in targets:
                url = servers[target][0]
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
                prepared[target] = (url, body, header_length)
            for c in s.concurrency:
                # wrk alternates between the servers, round after round (A, B, bare, A, B,
                # bare, ...): a noisy spell of the shared machine falls on all of them alike;
                # each figure is the median of its rounds
                rounds: dict[str, list[Result]] = {target: [] for target in targets}
                for _ in range(ROUNDS):
                    for target in targets:
                        url, body, header_length = prepared[target]
                        root, pid = servers[target]
                        one = functools.partial(_round, s, target, c, url, body, header_length,
                                                root, pid)  # fmt: skip
                        r = one(SECONDS)
                        if not reliable(r):  # too few answers a connection to read its CPU
                            r = one(rerun_seconds(r))
                        rounds[target].append(r)
                for target in targets:
                    r = median_result(rounds[target])
                    if is_ours(target):
                        r = replace(r, forward_us=forward_us(s, r.mean_batch))
                    results.append(r)
                    cpus = ", ".join(f"{x.cpu_ms:.3f}" for x in rounds[target])
                    print(
                        f"{s.name:45s} {target:18s} c={c:<3d} {r.rps:9.1f} req/s  p50 {r.p50_ms:8.2f} ms  "
                        f"p99 {r.p99_ms:8.2f} ms  cpu {r.cpu_ms:6.3f} ms/req ({cpus})  batch {r.mean_batch:5.1f}  errors {r.errors}",
                        flush=True,
                    )  # fmt: skip
            for target in targets:
                url, body, header_length = prepared[target]
                pid = servers[target][1]
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
        "own_codecs": own,
        "compared": compared,
        "handoff": handoff,
        "profiles": profiles,
    }
    (out_dir / "report-inputs.json").write_text(json.dumps(inputs))  # fmt: skip
    write_report(
        results, floors, batched64, metrics, streaming, codecs, compared, handoff, profiles, own
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    # the report's own commands, as make bench-publish has always called them
    if sys.argv[1:] in (["--report"], ["--replot"], ["--publish"]):
        from bench import report

        {"--report": report.report_again, "--replot": report.replot_published,
         "--publish": report.publish}[sys.argv[1]]()  # fmt: skip
    else:
        main()

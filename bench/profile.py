"""Where a request's CPU goes: a py-spy profile of the running server, summarized by stage.

`make bench` records each rnn-serve scenario at c=64 with py-spy (a separate wrk run from the
measured one: sampling slows the server) and splits the samples into the stages of a request:

- HTTP: uvicorn, httptools, the loop's own I/O (uvloop) and rnn-serve's HTTP protocol class;
- edge: the ASGI edge, routing, auth, FastAPI/Starlette, the route functions;
- codec: parsing the body, decoding tensors, encoding the answer (service/codecs, the tensor
  casts);
- admission: the data plane (deadlines, the admission gate, model lookups, validation);
- queue hand-off: the batcher, futures and tasks, the worker thread's wake-up;
- worker: the forward in the engine thread (torch, the runner);
- metrics and logs: Prometheus counters, the access log, tracing;
- other: anything else (garbage collection, imports).

Each sample is given to the stage of its innermost frame that names one (a NumPy call inside
the codec counts as codec); samples of the engine thread are the worker's, except its wait for
the next batch. The figures are shares of the samples, so multiplied by the run's measured CPU a
request they give microseconds a request by stage.

    python -m bench.profile <pid> <seconds> [out.txt]   # record and print the stages
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

STAGES = (
    "HTTP",
    "edge",
    "codec",
    "admission",
    "queue hand-off",
    "worker",
    "metrics and logs",
    "other",
)

# (stage, pattern on "function (file:line)"), first match from the innermost frame outward
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (stage, re.compile(pattern))
    for stage, pattern in (
        (
            "metrics and logs",
            r"\((service/core/(metrics|logs|tracing)\.py|service/http/record\.py|prometheus_client/|logging/)",
        ),
        ("codec", r"\((service/codecs/|service/engine/tensor\.py|service/engine/state\.py)"),
        (
            "queue hand-off",
            r"\(service/(engine/batcher|runtime/transport/)|\((asyncio|concurrent)/futures",
        ),
        ("queue hand-off", r"\(asyncio/tasks\.py|^Task\.|call_soon_threadsafe"),
        ("admission", r"\(service/(dataplane/|core/limits|catalog/|engine/(validate|engine)\.py)"),
        ("admission", r"\(service/(runtime/local\.py|sessions/)"),
        ("edge", r"\(service/http/(?!protocol\.py)|\((fastapi|starlette)/|\(service/app\.py"),
        ("HTTP", r"\(service/http/protocol\.py|\(uvicorn/|\(httptools/|\(h11/|\(asyncio/"),
    )
)
_WAIT = re.compile(
    r"^Worker\._serve \(service/engine/worker\.py|_worker \(concurrent/futures/thread\.py"
    r"|Condition\.wait|\(queue\.py"
)


def stage_of(thread: str, frames: list[str]) -> str:
    """The stage of one sample: its thread's name and its frames, outermost first."""
    if "rnn-engine" in thread:
        return "queue hand-off" if frames and _WAIT.search(frames[-1]) else "worker"
    if "access-log" in thread:
        return "metrics and logs"
    for frame in reversed(frames):
        for stage, pattern in _RULES:
            if pattern.search(frame):
                return stage
    return "other"


def summarize(raw: str) -> dict[str, float]:
    """Shares of the samples by stage (they sum to 1) from py-spy's raw (collapsed) output."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        thread, *frames = stack.split(";")
        counts[stage_of(thread, frames)] += int(n)
    total = sum(counts.values())
    return {stage: counts[stage] / total if total else 0.0 for stage in STAGES}


def py_spy() -> str | None:
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, out: Path, rate: int = 200) -> dict[str, float] | None:
    """Profile `pid` (its threads, not idle ones) for `seconds`; None where py-spy cannot run
    here (not installed, or not allowed to attach)."""
    tool = py_spy()
    if tool is None:
        return None
    done = subprocess.run(
        [tool, "record", "-p", str(pid), "-d", f"{max(1, round(seconds))}", "-r", str(rate),
         "--format", "raw", "--threads", "--nonblocking", "-o", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0 or not out.exists():
        print(f"py-spy could not profile the server: {done.stderr.strip()[-300:]}", flush=True)
        return None
    return summarize(out.read_text())


if __name__ == "__main__":
    pid, seconds = int(sys.argv[1]), float(sys.argv[2])
    path = Path(sys.argv[3]) if len(sys.argv) > 3 else Path("profile.txt")
    shares = record(pid, seconds, path)
    for stage, share in (shares or {}).items():
        print(f"{stage:18s} {share:6.1%}")

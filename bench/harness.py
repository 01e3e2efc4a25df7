"""What the bench scripts share: the folders, starting a server and finding its port, the CPU
a process spent (from /proc), wrk and the rows it measures, and checking out another commit."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
OUT = BENCH / "out"  # what a run writes; bench/ holds the published run
SECONDS = float(os.environ.get("BENCH_SECONDS", "4"))  # a round's length


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
    seconds: float = SECONDS  # the round's length; a longer one is a rerun


# A round's CPU a request is its CPU over the requests it answered: the work on the `c`
# requests still in flight at its edges is counted too. With fewer than this many answers a
# connection, that error is over ~10% (a 2 MiB body at c=64 on the bare no-op: ~1 a connection).
MIN_ANSWERS_PER_CLIENT = 10


def reliable(r: Result) -> bool:
    """Whether a round answered enough requests for its CPU a request to be read."""
    return r.rps * r.seconds >= MIN_ANSWERS_PER_CLIENT * r.concurrency


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, tries: int = 200) -> None:
    """Until something listens on the loopback port (a server just started), 20 ms a try."""
    for _ in range(tries):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)


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

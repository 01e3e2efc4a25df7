"""Start the real server as `make run` does (the rnn-serve command), on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import may_start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_server(repository: Path | str, log_path: Path, **env: str) -> Iterator[str]:
    with server_process(repository, log_path, **env) as (url, _):
        yield url


@contextlib.contextmanager
def server_process(
    repository: Path | str, log_path: Path, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The server's URL and its process (for signal tests); on env's RNN_SERVE_PORT (a restart
    in place of one stopped) or a free port."""
    with server_processes((repository, log_path, env)) as [started]:
        yield started


Launch = tuple[Path | str, Path, dict[str, str]]  # (repository, log file, environment)


@contextlib.contextmanager
def server_processes(
    *launches: Launch, measured: bool = True
) -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    """Several servers started side by side (each process imports torch at once, rather than
    one after another), ready when this yields; stopped together (SIGTERM to all, then waits).

    `measured=False` keeps coverage out of them: for the load tests' replicas, which run lines
    other tests cover, thousands of times over, and would spend most of their CPU tracing them.
    """
    started: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    try:
        for repository, log_path, env in launches:
            started.append(_spawn(repository, log_path, dict(env), measured))
        for url, proc, log_path in started:
            _await_ready(url, proc, log_path)
        yield [(url, proc) for url, proc, _ in started]
    finally:
        for _, proc, _ in started:
            proc.send_signal(signal.SIGTERM)
        for _, proc, _ in started:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _spawn(
    repository: Path | str, log_path: Path, env: dict[str, str], measured: bool = True
) -> tuple[str, subprocess.Popen[bytes], Path]:
    may_start("an rnn-serve process")
    port = int(env.pop("RNN_SERVE_PORT", 0)) or free_port()
    script = Path(sys.executable).with_name("rnn-serve")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "service"]
    # (no gRPC port unless the test asks for one: tests run side by side)
    base = {**os.environ, "RNN_SERVE_MODEL_REPOSITORY": str(repository), "RNN_SERVE_GRPC_PORT": "0"}
    if not measured:  # coverage's subprocess patch starts it where either variable is set
        base.pop("COVERAGE_PROCESS_CONFIG", None)
        base.pop("COVERAGE_PROCESS_START", None)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**base, **env},
        )
    return f"http://127.0.0.1:{port}", proc, log_path


def _await_ready(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            pytest.fail(f"server never became ready:\n{log_path.read_text()}")
        time.sleep(0.1)

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
    port = int(env.pop("RNN_SERVE_PORT", 0)) or free_port()
    script = Path(sys.executable).with_name("rnn-serve")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "service"]
    # (no gRPC port unless the test asks for one: tests run side by side)
    base = {**os.environ, "RNN_SERVE_MODEL_REPOSITORY": str(repository), "RNN_SERVE_GRPC_PORT": "0"}
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**base, **env},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"server never became ready:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield url, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

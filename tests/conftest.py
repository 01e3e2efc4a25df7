"""Shared fixtures: an in-process app under its lifespan, and helpers to call it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from service.app import create_app
from service.settings import Settings


def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: CPU, a fresh model repository unless one is given."""
    base: dict[str, Any] = {
        "device": "cpu",
        "model_repository": Path(tempfile.mkdtemp(prefix="rnn-serve-test-")),
    }
    return Settings(_env_file=None, **{**base, **overrides})  # type: ignore[call-arg]


async def wait_ready(client: httpx.AsyncClient, within: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while (await client.get("/readyz")).status_code != 200:
        assert asyncio.get_running_loop().time() < deadline, "the app never became ready"
        await asyncio.sleep(0.02)


async def open_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        LifespanManager(app, startup_timeout=60) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(manager.app), base_url="http://testserver"
        ) as client,
    ):
        await wait_ready(client)
        yield client


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def client(anyio_backend: str) -> AsyncIterator[httpx.AsyncClient]:
    """One app per test module, for tests that do not change the registry."""
    async for c in open_client(make_settings()):
        yield c


@pytest.fixture
async def fresh_client(anyio_backend: str) -> AsyncIterator[httpx.AsyncClient]:
    """A new app for a test that registers or deletes models."""
    async for c in open_client(make_settings()):
        yield c


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real server, started as `make run` starts it (the rnn-serve command), on loopback."""
    port = _free_port()
    folder = tmp_path_factory.mktemp("server")
    log_path = folder / "server.log"
    script = Path(sys.executable).with_name("rnn-serve")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "service"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RNN_SERVE_MODEL_REPOSITORY": str(folder / "models")},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server never became ready:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

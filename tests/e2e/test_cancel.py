"""A client that disconnects cancels its work: the real server (one process, and two front-ends
with an engine process), a long forward in time slices, the client gone mid-way — the request
is counted as 499 (not 500), no further slice runs, and the server goes on serving."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from tests.support import wait_until
from tests.support.helpers import b64
from tests.support.server import server_process

pytestmark = pytest.mark.e2e
STEPS = 60_000


def metric(url: str, pattern: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(pattern, text, re.M))


TIMESTEPS = r"^rnn_serve_timesteps_total ([0-9.e+]+)$"
GONE = r'^rnn_serve_requests_total\{[^}]*status="499"[^}]*\} ([0-9.e+]+)$'


@pytest.mark.parametrize("frontends", ["1", "2"])
def test_a_client_that_leaves_cancels_its_work(tmp_path: Path, frontends: str) -> None:
    env = {
        "RNN_SERVE_FRONTENDS": frontends,
        "RNN_SERVE_SLICE_MACS": "2e7",
        "RNN_SERVE_MAX_TENSOR_ELEMENTS": "50000000",
        "RNN_SERVE_LOG_LEVEL": "warning",
    }
    with server_process(tmp_path / "models", tmp_path / "server.log", **env) as (url, _):
        x = np.random.default_rng(0).standard_normal((STEPS, 1)).astype(np.float32)
        body = orjson.dumps({"config": {"input_size": 1, "hidden_size": 256},
                             "input": b64(x), "output_encoding": "b64"})  # fmt: skip
        before = metric(url, TIMESTEPS)
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as conn:
            conn.sendall(b"POST /v1/rnn/forward HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body)  # fmt: skip
            time.sleep(0.4)  # its slices are running
        # gone: counted as the client's, 499
        wait_until(lambda: metric(url, GONE) >= 1, 10)  # the disconnect counted as 499
        time.sleep(0.2)  # a slice running when it left finishes; no other starts
        ran = metric(url, TIMESTEPS) - before
        assert 0 < ran < STEPS, ran
        time.sleep(0.5)
        assert metric(url, TIMESTEPS) - before == ran, "slices ran after the client left"
        assert not re.search(r'status="500"', httpx.get(f"{url}/metrics").text)
        r = httpx.post(f"{url}/v1/models/default/forward", json={"input": [[0.0] * 10]})
        assert r.status_code == 200
    assert "Traceback" not in (tmp_path / "server.log").read_text()

"""The real server over loopback, started as `make run` starts it."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from tests.support import wait_until
from tests.support.server import server_process

pytestmark = pytest.mark.e2e


def test_readme_example_over_http(live_server: str) -> None:
    """rnn = nn.RNN(10, 20, 2); output, hn = rnn(torch.randn(5, 3, 10), torch.randn(2, 3, 20))"""
    x, h0 = torch.randn(5, 3, 10), torch.randn(2, 3, 20)
    r = httpx.post(
        f"{live_server}/v1/models/default/forward",
        json={"input": x.tolist(), "h0": h0.tolist()},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["output_shape"] == [5, 3, 20]
    assert body["h_n_shape"] == [2, 3, 20]
    torch.manual_seed(0)
    with torch.no_grad():
        out, hn = torch.nn.RNN(10, 20, 2)(x, h0)
    np.testing.assert_allclose(np.asarray(body["output"]), out.numpy(), atol=1e-6)
    np.testing.assert_allclose(np.asarray(body["h_n"]), hn.numpy(), atol=1e-6)


def test_errors_are_problems_over_the_wire(live_server: str) -> None:
    r = httpx.post(
        f"{live_server}/v1/models/default/forward",
        content=b"not json",
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert httpx.get(f"{live_server}/healthz", timeout=5).json() == {"status": "ok"}
    assert "rnn_serve_requests_total" in httpx.get(f"{live_server}/metrics", timeout=5).text


def test_a_started_server_says_once_where_it_listens(tmp_path: Path) -> None:
    """`make run` on a fresh machine prints pip's output and then log lines: one of them says,
    once it is ready, where it listens and where its API docs are."""
    log = tmp_path / "server.log"
    with server_process(tmp_path / "models", log) as (url, _):
        wait_until(lambda: "is ready on" in log.read_text(), 30)
        lines = [line for line in log.read_text().splitlines() if "is ready on" in line]
        assert len(lines) == 1, lines
        assert f"{url}: model 'default'" in lines[0], lines[0]
        assert f"{url}/docs" in lines[0], lines[0]

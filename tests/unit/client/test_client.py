"""The client's retry and error logic, against an in-memory transport (no network)."""

from __future__ import annotations

import httpx
import numpy as np
import orjson
import pytest

from service.client import Client, Overloaded, ServerError


def _ok(request: httpx.Request) -> httpx.Response:
    head = orjson.dumps({"model_name": "m", "outputs": [
        {"name": "output", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]},
        {"name": "h_n", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}},
    ]})  # fmt: skip
    return httpx.Response(200, content=head + np.array([3, 4], "<f4").tobytes(),
                          headers={"Inference-Header-Content-Length": str(len(head))})  # fmt: skip


def test_retries_429_honouring_retry_after_then_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[httpx.Request] = []
    sleeps: list[float] = []
    monkeypatch.setattr("rnn_serve_client._retry.time.sleep", sleeps.append)

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) < 3:
            return httpx.Response(429, json={"error": "busy"}, headers={"Retry-After": "2"})
        return _ok(request)

    with Client("http://rnn", transport=httpx.MockTransport(handler)) as c:
        out, hn = c.forward("m", np.zeros((1, 3), np.float32))
    assert len(calls) == 3
    assert sleeps == [2.0, 2.0]
    np.testing.assert_array_equal(out, [[1, 2]])
    np.testing.assert_array_equal(hn, [[3, 4]])
    head_len = int(calls[0].headers["inference-header-content-length"])
    head = orjson.loads(calls[0].content[:head_len])
    assert head["inputs"][0] == {
        "name": "input",
        "shape": [1, 3],
        "datatype": "FP32",
        "parameters": {"binary_data_size": 12},
    }


def test_gives_up_after_retries_with_typed_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rnn_serve_client._retry.time.sleep", lambda s: None)
    transport = httpx.MockTransport(lambda r: httpx.Response(503, json={"error": "draining"}))
    with (
        Client("http://rnn", transport=transport, retries=2) as c,
        pytest.raises(Overloaded) as err,
    ):
        c.list_models()
    assert err.value.status == 503
    assert err.value.detail == "draining"
    boom = httpx.MockTransport(lambda r: httpx.Response(507, json={"detail": "out of memory"}))
    with (
        Client("http://rnn", transport=boom) as c,
        pytest.raises(ServerError, match="out of memory"),
    ):
        c.get_model("m")


def test_connection_errors_are_retried_then_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing was answered: every call may go again (tenacity, with backoff)."""
    sleeps: list[float] = []
    monkeypatch.setattr("rnn_serve_client._retry.time.sleep", sleeps.append)
    calls = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) <= 2:
            raise httpx.ConnectError("refused", request=request)
        return _ok(request)

    with Client("http://rnn", transport=httpx.MockTransport(flaky), backoff=0.1) as c:
        c.forward("m", np.zeros((1, 3), np.float32))
    assert len(calls) == 3
    assert len(sleeps) == 2
    assert 0.05 <= sleeps[0] <= 0.1
    assert 0.1 <= sleeps[1] <= 0.2  # exponential, with jitter

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with (
        Client("http://rnn", transport=httpx.MockTransport(down), retries=1) as c,
        pytest.raises(httpx.ConnectError),
    ):
        c.list_models()
    assert Client("http://127.0.0.1:9").ready() is False  # nothing there: not ready, no raise


def test_the_sync_and_async_clients_have_one_surface() -> None:
    """The async client is the sync one, awaited: the same public methods (close is aclose),
    each with its docstring, on the client, its sessions and its OIP sequences."""
    from rnn_serve_client import (
        AsyncClient,
        AsyncSequence,
        AsyncSession,
        Client,
        Sequence,
        Session,
    )

    def public(cls: type) -> set[str]:
        return {n for n in dir(cls) if not n.startswith("_")}

    for sync, asynchronous in ((Client, AsyncClient), (Session, AsyncSession),
                               (Sequence, AsyncSequence)):  # fmt: skip
        assert public(sync) - {"close"} == public(asynchronous) - {"aclose", "close"}, sync
        for name in public(sync) & public(asynchronous):
            for cls in (sync, asynchronous):
                method = getattr(cls, name)
                if callable(method):
                    assert method.__doc__, f"{cls.__name__}.{name} has no docstring"

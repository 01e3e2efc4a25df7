"""The Python client's sessions against the real server: open, stream, export, resume, fork,
close, OIP sequences, and chunks whose answers are lost on the way back (resent, applied once).
Every stream is checked against the float64 oracle over the whole sequence."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from service.client import AsyncClient, Client, NotFound, StepConflict
from tests.oracle import forward, seeded_params

pytestmark = pytest.mark.e2e
SEED = {"input_size": 10, "hidden_size": 20, "num_layers": 2}


def oracle(x: np.ndarray, **kw: Any) -> np.ndarray:
    out, _, _ = forward(seeded_params(SEED), SEED, x, **kw)
    return out


class LosesAnswers(httpx.HTTPTransport):
    """A network that drops the answer of every `every`-th request after the server handled
    it (the request arrived; the client sees a read timeout)."""

    def __init__(self, every: int) -> None:
        super().__init__()
        self.every, self.count, self.lost = every, 0, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.count += 1
        streamed = "/forward" in request.url.path or "/infer" in request.url.path
        if streamed and self.count % self.every == 0:
            response.read()
            response.close()
            self.lost += 1
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


def test_open_stream_export_resume_fork_close(live_server: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 2, 10)).astype(np.float32)
    with Client(live_server) as rnn:
        s = rnn.open_session("default")
        outs = [s.forward(x[i : i + 4])[0] for i in range(0, 8, 4)]
        assert s.steps == 8
        saved, as_json = s.export(), s.export("json")
        assert isinstance(saved, bytes)
        assert as_json["steps"] == 8
        branch = s.fork()
        assert branch.steps == 8
        outs.append(s.forward(x[8:20])[0])
        np.testing.assert_allclose(np.concatenate(outs), oracle(x), atol=1e-5)

        for state in (saved, as_json):  # resume from the export, either form
            with rnn.open_session("default", state=state) as resumed:
                assert resumed.steps == 8
                out, _h_n = resumed.forward(x[8:20])
                np.testing.assert_allclose(out, oracle(x)[8:], atol=1e-5)
        other = rng.standard_normal((3, 2, 10)).astype(np.float32)
        out, _ = branch.forward(other)
        np.testing.assert_allclose(out, oracle(np.concatenate([x[:8], other]))[8:], atol=1e-5)
        s.close()
        s.close()  # idempotent
        branch.close()


def test_lost_answers_are_resent_and_applied_once(live_server: str) -> None:
    """Every third answer is lost after the server applied the chunk; the client resends it,
    the server answers from the kept answer, and the stream still equals the oracle."""
    x = np.random.default_rng(1).standard_normal((30, 1, 10)).astype(np.float32)
    transport = LosesAnswers(every=3)
    with Client(live_server, transport=transport, backoff=0.01) as rnn:
        s = rnn.open_session("default", np.zeros((2, 1, 20), np.float32))
        outs = [s.forward(x[i : i + 3])[0] for i in range(0, 30, 3)]
        assert transport.lost >= 4
        assert s.steps == 30
        assert rnn.session(s.id).steps == 30  # not one chunk applied twice
    np.testing.assert_allclose(np.concatenate(outs), oracle(x), atol=1e-5)


def test_gaps_raise_step_conflict_and_unknown_sessions_404(live_server: str) -> None:
    with Client(live_server) as rnn:
        s = rnn.open_session("default")
        s.forward(np.ones((2, 10), np.float32))
        s.steps = 5  # a client that lost track
        with pytest.raises(StepConflict) as info:
            s.forward(np.ones((2, 10), np.float32))
        assert info.value.current_step == 2
        with pytest.raises(NotFound):
            rnn.session("no-such-session-id-here")


def test_oip_sequence_through_the_client(live_server: str) -> None:
    x = np.random.default_rng(2).standard_normal((9, 10)).astype(np.float32)
    h0 = np.random.default_rng(3).standard_normal((2, 20)).astype(np.float32)
    transport = LosesAnswers(every=2)
    with Client(live_server, transport=transport, backoff=0.01) as rnn:
        seq = rnn.sequence("default", "client-seq-1")
        outs = [seq.forward(x[:3], h0)[0], seq.forward(x[3:6])[0], seq.forward(x[6:])[0]]
        assert seq.steps == 9
        assert transport.lost >= 1
    np.testing.assert_allclose(np.concatenate(outs), oracle(x, h0=h0), atol=1e-5)


def test_async_sessions(live_server: str) -> None:
    x = torch.randn(6, 1, 10)

    async def main() -> tuple[Any, Any]:
        async with AsyncClient(live_server) as rnn, await rnn.open_session("default") as s:
            first, _ = await s.forward(x[:2])
            fork = await s.fork()
            rest, h_n = await s.forward(x[2:])
            state = await s.export("json")
            assert state["steps"] == 6
            await fork.close()
            return torch.cat([first, rest]), h_n

    out, _h_n = asyncio.run(main())
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), oracle(x.numpy()), atol=1e-5)

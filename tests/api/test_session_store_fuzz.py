"""A stateful fuzz of sessions in Redis: two replicas on one real redis-server, OIP sequences
with small reused ids started, restarted, continued, resent and ended on either replica, with
Redis stalled mid-commit and garbage written into it. Every answer is checked against the
float64 oracle over the whole sequence, and every fault answer is taken at its word: a chunk a
504 says was not applied is sent again without start_step, so an answer that lies is caught as
a chunk applied twice."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from service.sessions.redis_store import PREFIX, member
from tests.conftest import make_settings, open_client
from tests.oracle import forward, seeded_params
from tests.support.redis_server import RedisServer

SEED = {"input_size": 10, "hidden_size": 20, "num_layers": 2}
IDS = st.sampled_from([7, 7, 7, 1])  # small ids, reused all the time (as Triton clients do)
REPLICA = st.sampled_from([0, 1])
LENGTH = st.sampled_from([2, 3])  # few lengths: restarts meet stale copies at the same step


def oracle(x: np.ndarray) -> np.ndarray:
    out, _, _ = forward(seeded_params(SEED), SEED, x)
    return out


def body(x: np.ndarray, seq: int, **params: Any) -> dict[str, Any]:
    return {
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                    "data": x.ravel().tolist()}],
        "parameters": {"sequence_id": seq, **params},
    }  # fmt: skip


def output(r: httpx.Response) -> np.ndarray:
    o = next(o for o in r.json()["outputs"] if o["name"] == "output")
    return np.asarray(o["data"], np.float64).reshape(o["shape"])


@dataclass
class Stream:
    """What the client knows of one sequence: every step applied, and its last chunk."""

    steps: list[np.ndarray] = field(default_factory=list)
    last: tuple[dict[str, Any], np.ndarray] | None = None  # the body and its answer
    damaged: bool = False

    @property
    def x(self) -> np.ndarray:
        return np.concatenate(self.steps) if self.steps else np.zeros((0, 10), np.float32)


class Replicas(RuleBasedStateMachine):
    redis_server: RedisServer
    repo: Path

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.gens: list[Any] = []
        self.clients: list[httpx.AsyncClient] = []
        self.streams: dict[int, Stream] = {}
        self.rng = np.random.default_rng(0)
        self.store = redis.Redis(port=self.redis_server.port)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    @initialize()
    def start_replicas(self) -> None:
        self.store.flushall()
        for _ in range(2):
            gen = open_client(make_settings(model_repository=self.repo,
                                            session_store=self.redis_server.url))  # fmt: skip
            self.gens.append(gen)
            self.clients.append(self.run(anext(gen)))

    def teardown(self) -> None:
        for gen in reversed(self.gens):
            self.run(gen.aclose())
        self.loop.close()

    def infer(self, replica: int, payload: dict[str, Any], **kw: Any) -> httpx.Response:
        r: httpx.Response = self.run(
            self.clients[replica].post("/v2/models/default/infer", json=payload, **kw)
        )
        return r

    def chunk(self, n: int) -> np.ndarray:
        return self.rng.standard_normal((n, 10)).astype(np.float32)

    def applied(self, seq: int, x: np.ndarray, payload: dict[str, Any], r: httpx.Response) -> None:
        """A 200: the chunk is applied; its answer is the oracle's for those steps."""
        assert r.status_code == 200, r.text
        stream = self.streams[seq]
        before = len(stream.x)
        stream.steps.append(x)
        got = output(r)
        np.testing.assert_allclose(got, oracle(stream.x)[before:], atol=1e-5)
        stream.last = (payload, got)

    @rule(seq=IDS, replica=REPLICA, n=LENGTH)
    def start(self, seq: int, replica: int, n: int) -> None:
        """sequence_start, on either replica: a new opening of a small reused id."""
        x = self.chunk(n)
        payload = body(x, seq, sequence_start=True, start_step=0)
        self.streams[seq] = Stream()
        self.applied(seq, x, payload, self.infer(replica, payload))

    @rule(seq=IDS, replica=REPLICA, n=LENGTH, exactly_once=st.booleans())
    def go_on(self, seq: int, replica: int, n: int, exactly_once: bool) -> None:
        stream = self.streams.get(seq)
        if stream is None:
            return
        x = self.chunk(n)
        params = {"start_step": len(stream.x)} if exactly_once else {}
        payload = body(x, seq, **params)
        r = self.infer(replica, payload)
        if stream.damaged:
            assert r.status_code == 409, r.text
            assert "cannot be read" in r.text, r.text
            return
        self.applied(seq, x, payload, r)

    @rule(seq=IDS, replica=REPLICA)
    def resend(self, seq: int, replica: int) -> None:
        """The last chunk again (its answer was lost): its kept answer, on any replica."""
        stream = self.streams.get(seq)
        if stream is None or stream.last is None or stream.damaged:
            return
        payload, answer = stream.last
        if "start_step" not in payload["parameters"]:
            return
        r = self.infer(replica, payload)
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(output(r), answer)

    @rule(seq=IDS, replica=REPLICA, n=LENGTH)
    def stalled(self, seq: int, replica: int, n: int) -> None:
        """Redis stalls while the chunk commits past its deadline. A 200 is applied; a 504 says
        it was not: the client sends it again without start_step, trusting that."""
        stream = self.streams.get(seq)
        if stream is None or stream.damaged:
            return
        x = self.chunk(n)
        payload = body(x, seq, start_step=len(stream.x))
        stall = threading.Thread(
            target=lambda: self.store.execute_command("DEBUG", "SLEEP", 0.5)  # type: ignore[no-untyped-call]
        )
        stall.start()
        self.run(asyncio.sleep(0.05))
        r = self.infer(replica, payload, headers={"X-Request-Timeout": "0.2"})
        stall.join()
        if r.status_code == 504:
            retry = body(x, seq)
            self.applied(seq, x, retry, self.infer(replica, retry))
        else:
            self.applied(seq, x, payload, r)

    @rule(seq=IDS)
    def garbage(self, seq: int) -> None:
        """Someone writes a step that is not a number into the stored session."""
        stream = self.streams.get(seq)
        if stream is None:
            return
        key = f"{PREFIX}s:{member(f'oip:default:n:{seq}', None)}"
        if self.store.hset(key, "step", "abc") == 0:  # (it existed: its step was replaced)
            stream.damaged = True

    @rule(seq=IDS, first=REPLICA, n=LENGTH)
    def end(self, seq: int, first: int, n: int) -> None:
        """The last chunk, then a resend of it on the other replica: its kept answer."""
        stream = self.streams.get(seq)
        if stream is None or stream.damaged:
            return
        x = self.chunk(n)
        payload = body(x, seq, sequence_end=True, start_step=len(stream.x))
        self.applied(seq, x, payload, self.infer(first, payload))
        again = self.infer(1 - first, payload)
        assert again.status_code == 200, again.text
        np.testing.assert_array_equal(output(again), output(self.infer(first, payload)))
        del self.streams[seq]

    @invariant()
    def both_replicas_ready(self) -> None:
        for c in self.clients:
            assert self.run(c.get("/readyz")).status_code == 200


@pytest.mark.fuzz
def test_sessions_in_redis_hold_under_reuse_stalls_and_garbage(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    Replicas.redis_server = redis_server
    Replicas.repo = tmp_path / "shared"
    run_state_machine_as_test(
        Replicas,
        settings=settings(
            max_examples=6,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )

"""The real server with two front-end processes and one engine: answers equal the oracle from
either front-end, a session continues whichever front-end takes a chunk, metrics add up over
every process, and SIGTERM stops it all, leaving no shared memory behind; each front-end serves
gRPC too."""

from __future__ import annotations

import os
import signal
import time
import warnings
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.oracle import forward, seeded_params
from tests.support import wait_until
from tests.support.helpers import b64, decode
from tests.support.server import free_port, server_process

pytestmark = pytest.mark.e2e
SEED = {"input_size": 10, "hidden_size": 20, "num_layers": 2}
LSTM = {"mode": "LSTM", "input_size": 3, "hidden_size": 6, "proj_size": 2}


def _segments() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith("psm_")}


def test_two_frontends_one_engine(tmp_path: Path) -> None:
    """One server (its start is the test's cost) for HTTP, then gRPC, then SIGTERM."""
    before = _segments()
    port = free_port()
    env = {"RNN_SERVE_FRONTENDS": "2", "RNN_SERVE_LOG_LEVEL": "warning",
           "RNN_SERVE_GRPC_PORT": str(port)}  # fmt: skip
    with server_process(tmp_path / "models", tmp_path / "server.log", **env) as (url, proc):
        rng = np.random.default_rng(3)
        params = seeded_params(SEED)
        prefixes: set[str] = set()  # of made request ids: one per process
        sent = 0
        while sent < 16 or (len(prefixes) < 2 and sent < 200):
            x = rng.standard_normal((4, 2, 10)).astype(np.float32)
            with httpx.Client(base_url=url, timeout=30) as c:  # a new connection each time
                r = c.post("/v1/models/default/forward", json={"input": b64(x)})
                assert r.status_code == 200, r.text
                prefixes.add(r.headers["x-request-id"][:16])
            sent += 1
            want, _, _ = forward(params, SEED, x)
            np.testing.assert_allclose(np.asarray(r.json()["output"]), want, atol=1e-5)
        assert len(prefixes) == 2, "both front-ends should have answered"

        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.post("/v1/models", json={"name": "l", "config": LSTM}).status_code == 201
            sid = c.post("/v1/models/l/sessions", json={"batch_size": 1}).json()["session_id"]
        x = rng.standard_normal((12, 1, 3)).astype(np.float32)
        outs = []
        for i in range(0, 12, 3):
            with httpx.Client(base_url=url, timeout=30) as c:  # any front-end
                r = c.post(f"/v1/sessions/{sid}/forward",
                           json={"input": b64(x[i : i + 3]), "output_encoding": "b64"})  # fmt: skip
                assert r.status_code == 200, r.text
                outs.append(decode(r.json()["output"]))
        want, _, _ = forward(seeded_params(LSTM), LSTM, x)
        np.testing.assert_allclose(np.concatenate(outs), want, atol=1e-5)
        assert r.json()["steps"] == 12

        metrics = httpx.get(f"{url}/metrics", timeout=30).text
        forwards = [
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("rnn_serve_requests_total")
            and 'route="/v1/models/{name}/forward"' in line
        ]
        assert sum(forwards) == sent  # counted by both front-ends, reported as one sum
        assert "rnn_serve_loaded_modules 2.0" in metrics  # the engine's gauge
        assert _segments() - before  # the front-ends' arenas exist while they run
        _both_frontends_serve_grpc_and_a_stream_goes_on_through_either(port)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    assert not (_segments() - before), "a front-end left its shared memory behind"
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log, log
    assert "leaked" not in log, log


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_frontends_stop_when_the_engine_process_dies(tmp_path: Path) -> None:
    """SIGKILL the process that runs the engine: its front-ends must not linger as orphans
    holding the port (they lose the engine's socket and stop as on SIGTERM)."""
    env = {"RNN_SERVE_FRONTENDS": "2", "RNN_SERVE_LOG_LEVEL": "warning"}
    with server_process(tmp_path / "models", tmp_path / "server.log", **env) as (url, proc):
        prefixes: set[str] = set()  # both front-ends serving (connected to the engine)
        deadline = time.monotonic() + 60
        while len(prefixes) < 2:
            assert time.monotonic() < deadline, "the second front-end never answered"
            with httpx.Client(base_url=url, timeout=30) as c:  # a new connection each time
                prefixes.add(c.get("/v1/models").headers["x-request-id"][:16])
        frontends = [
            p for p in _children(proc.pid)
            if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()
            and b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()
        ]  # fmt: skip
        assert len(frontends) == 2, frontends
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_until(lambda: not any(_alive(p) for p in frontends), 20)  # none outlives the engine
    assert "lost the engine" in (tmp_path / "server.log").read_text()


def _both_frontends_serve_grpc_and_a_stream_goes_on_through_either(port: int) -> None:
    """With two front-end processes, each serves gRPC on the one port (SO_REUSEPORT): new
    connections reach both (their request ids' prefixes say which), and a sequence streamed
    through one goes on through the other, since the engine holds it."""
    import grpc

    with warnings.catch_warnings():  # gevent's import-time deprecation notices are not ours
        warnings.simplefilter("ignore")
        from tritonclient.grpc import service_pb2, service_pb2_grpc

    rng = np.random.default_rng(8)
    params = seeded_params(SEED)

    def request(x: np.ndarray, **sequence: object) -> object:
        req = service_pb2.ModelInferRequest(model_name="default")
        req.inputs.add(name="input", datatype="FP32", shape=x.shape)
        req.raw_input_contents.append(x.tobytes())
        for name, value in sequence.items():
            if isinstance(value, bool):
                req.parameters[name].bool_param = value
            else:
                req.parameters[name].int64_param = int(value)  # type: ignore[call-overload]
        return req

    prefixes: set[str] = set()
    sent = 0
    while sent < 8 or (len(prefixes) < 2 and sent < 200):
        x = rng.standard_normal((3, 1, 10)).astype(np.float32)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:  # a new connection
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            answer, call = stub.ModelInfer.with_call(request(x), timeout=30)
        prefixes.add(dict(call.trailing_metadata())["x-request-id"][:16])
        sent += 1
        want, _, _ = forward(params, SEED, x)
        got = np.frombuffer(answer.raw_output_contents[0], np.float32).reshape(3, 1, 20)
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert len(prefixes) == 2, "both front-ends should have answered gRPC"

    x = rng.standard_normal((8, 1, 10)).astype(np.float32)
    outs = []
    for k in range(4):
        flags = {"sequence_id": 77, "sequence_start": k == 0, "sequence_end": k == 3}
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:  # any front-end
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            (reply,) = list(stub.ModelStreamInfer(iter([request(x[2 * k : 2 * k + 2], **flags)]),
                                                  timeout=30))  # fmt: skip
        assert not reply.error_message, reply.error_message
        outs.append(np.frombuffer(reply.infer_response.raw_output_contents[0], np.float32))
    want, _, _ = forward(params, SEED, x)
    np.testing.assert_allclose(np.concatenate(outs).reshape(8, 1, 20), want, atol=1e-5)

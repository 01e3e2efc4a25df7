"""The gRPC front end against the real server, through `tritonclient.grpc` (a client nobody
here wrote): Triton's GRPCInferenceService, its streaming sequences, health and reflection.

The server runs in its own process: tritonclient's generated modules register the `inference`
package in protobuf's default pool, which the server keeps out of (its own pool), and a test
process holds only the client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from tests.oracle import lstm_forward, rnn_forward, seeded_params
from tests.support import wait_until
from tests.support.server import free_port, running_server

pytestmark = pytest.mark.e2e
SEED = {"input_size": 10, "hidden_size": 20, "num_layers": 2}
LSTM = {"mode": "LSTM", "input_size": 4, "hidden_size": 6, "num_layers": 2, "proj_size": 3}
LONG = {"input_size": 1, "hidden_size": 256}  # a forward of many time slices
ADMIN, INFERENCE = "admin-key-for-grpc", "inference-key-for-grpc"

with warnings.catch_warnings():  # gevent's import-time deprecation notices are not ours
    warnings.simplefilter("ignore")
    import tritonclient.grpc as triton
    import tritonclient.grpc.aio as triton_aio
    from tritonclient.grpc import service_pb2, service_pb2_grpc
    from tritonclient.utils import InferenceServerException


@contextlib.contextmanager
def grpc_server(tmp: Path, **env: str) -> Iterator[tuple[str, str]]:
    """A real server with its gRPC port: (HTTP URL, gRPC host:port)."""
    port = free_port()
    with running_server(tmp / "models", tmp / "server.log", RNN_SERVE_GRPC_PORT=str(port),
                        **env) as url:  # fmt: skip
        yield url, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    # (a small in-flight bound: the streaming tests send far past it, so reading waits on answers)
    with grpc_server(tmp_path_factory.mktemp("grpc"), RNN_SERVE_MAX_BODY_BYTES=str(1 << 20),
                     RNN_SERVE_MAX_SESSIONS="64", RNN_SERVE_SLICE_MACS="2e7",
                     RNN_SERVE_GRPC_STREAM_MAX_IN_FLIGHT="8") as both:  # fmt: skip
        httpx.post(f"{both[0]}/v1/models", json={"name": "grpc-lstm", "config": LSTM}, timeout=30)
        httpx.post(f"{both[0]}/v1/models", json={"name": "grpc-long", "config": LONG}, timeout=30)
        yield both


def _input(name: str, arr: np.ndarray, datatype: str = "FP32") -> Any:
    item = triton.InferInput(name, list(arr.shape), datatype)
    item.set_data_from_numpy(arr)
    return item


def _status(exc: InferenceServerException) -> str:
    return str(exc.status())


# --- the unary calls -------------------------------------------------------------------------
def test_metadata_config_health_and_repository(server: tuple[str, str]) -> None:
    url, target = server
    client = triton.InferenceServerClient(target)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("default")
        with pytest.raises(InferenceServerException) as other_version:
            client.is_model_ready("default", model_version="2")
        assert _status(other_version.value) == "StatusCode.NOT_FOUND"
        meta = client.get_server_metadata()
        assert meta.name == "rnn-serve"
        assert "sequence" in meta.extensions
        assert list(meta.extensions) == httpx.get(f"{url}/v2").json()["extensions"]
        model = client.get_model_metadata("default")
        assert [i.name for i in model.inputs] == ["input", "h0", "lengths"]
        assert list(model.inputs[0].shape) == [-1, -1, 10]
        config = client.get_model_config("default").config
        assert config.name == "default"
        assert [i.name for i in config.input] == ["input", "h0", "lengths"]
        assert config.parameters["hidden_size"].string_value == "20"
        index = {m.name: m.state for m in client.get_model_repository_index().models}
        assert index["default"] == "READY"
        client.unload_model("grpc-lstm")
        assert {m.name: m.state for m in client.get_model_repository_index().models}[
            "grpc-lstm"
        ] == "UNAVAILABLE"
        client.load_model("grpc-lstm")
        x = np.zeros((2, 1, 10), dtype=np.float32)
        client.infer("default", [_input("input", x)])
        stats = client.get_inference_statistics("default").model_stats[0]
        assert stats.name == "default"
        assert stats.inference_count >= 1
        assert stats.inference_stats.compute_infer.count >= 1
        with pytest.raises(InferenceServerException) as missing:
            client.get_model_metadata("nope")
        assert _status(missing.value) == "StatusCode.NOT_FOUND"
        with pytest.raises(InferenceServerException) as unimplemented:
            client.get_system_shared_memory_status()
        assert _status(unimplemented.value) == "StatusCode.UNIMPLEMENTED"
    finally:
        client.close()


def _serving(health: Any, ask: Any) -> bool:
    from grpc_health.v1 import health_pb2

    return bool(health.Check(ask, timeout=10).status == health_pb2.HealthCheckResponse.SERVING)


def test_grpc_health_and_reflection(server: tuple[str, str]) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(server[1]) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            ask = health_pb2.HealthCheckRequest(service=service)
            # (a probe polls: readiness is followed, and may have blinked during a load)
            wait_until(functools.partial(_serving, health, ask), 10)
        stub: Any = reflection_pb2_grpc.ServerReflectionStub(channel)
        asks = [reflection_pb2.ServerReflectionRequest(list_services="")]
        listed = next(iter(stub.ServerReflectionInfo(iter(asks), timeout=10)))
        names = {s.name for s in listed.list_services_response.service}
        assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names
        asks = [reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="inference.GRPCInferenceService")]  # fmt: skip
        described = next(iter(stub.ServerReflectionInfo(iter(asks), timeout=10)))
        assert described.file_descriptor_response.file_descriptor_proto


@pytest.mark.parametrize("with_state", [False, True])
def test_infer_raw_equals_the_oracle_and_http_bit_for_bit(
    server: tuple[str, str], with_state: bool
) -> None:
    url, target = server
    rng = np.random.default_rng(int(with_state))
    x = rng.standard_normal((6, 3, 10)).astype(np.float32)
    h0 = rng.standard_normal((2, 3, 20)).astype(np.float32)
    lengths = np.array([6, 2, 4], dtype=np.int64)
    inputs = [_input("input", x)]
    if with_state:
        inputs += [_input("h0", h0), _input("lengths", lengths, "INT64")]
    client = triton.InferenceServerClient(target)
    try:
        result = client.infer("default", inputs, request_id="raw-1")
    finally:
        client.close()
    assert result.get_response().id == "raw-1"
    out, hn = result.as_numpy("output"), result.as_numpy("h_n")
    want_out, want_hn = rnn_forward(
        seeded_params(SEED), SEED, x, h0 if with_state else None,
        list(lengths) if with_state else None,
    )  # fmt: skip
    np.testing.assert_allclose(out, want_out, atol=1e-5)
    np.testing.assert_allclose(hn, want_hn, atol=1e-5)
    import tritonclient.http as triton_http

    http_inputs = []
    cases: list[tuple[str, np.ndarray, str]] = [
        ("input", x, "FP32"),
        ("h0", h0, "FP32"),
        ("lengths", lengths, "INT64"),
    ]
    for name, arr, kind in cases[: 3 if with_state else 1]:
        item = triton_http.InferInput(name, list(arr.shape), kind)
        item.set_data_from_numpy(arr, binary_data=True)
        http_inputs.append(item)
    http = triton_http.InferenceServerClient(url.removeprefix("http://"))
    try:
        twin = http.infer("default", http_inputs)
    finally:
        http.close()
    assert out.tobytes() == twin.as_numpy("output").tobytes()
    assert hn.tobytes() == twin.as_numpy("h_n").tobytes()


def test_infer_typed_contents_and_lstm_c0(server: tuple[str, str]) -> None:
    """Typed `contents` (fp32_contents, int64_contents) as well as raw bytes; an LSTM's c0 in
    and c_n out, with requested outputs."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 2, 4)).astype(np.float32)
    h0 = rng.standard_normal((2, 2, 3)).astype(np.float32)
    c0 = rng.standard_normal((2, 2, 6)).astype(np.float32)
    lengths = np.array([5, 3], dtype=np.int64)
    want_out, _, want_cn = lstm_forward(seeded_params(LSTM), LSTM, x, h0, c0, [5, 3])
    req = service_pb2.ModelInferRequest(model_name="grpc-lstm", id="typed")
    for name, arr in (("input", x), ("h0", h0), ("c0", c0)):
        tensor = req.inputs.add(name=name, datatype="FP32", shape=arr.shape)
        tensor.contents.fp32_contents.extend(arr.reshape(-1).tolist())
    tensor = req.inputs.add(name="lengths", datatype="INT64", shape=[2])
    tensor.contents.int64_contents.extend(lengths.tolist())
    for name in ("c_n", "output"):
        req.outputs.add(name=name)
    with grpc.insecure_channel(server[1]) as channel:
        answer = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(req, timeout=30)
    assert answer.id == "typed"
    assert [o.name for o in answer.outputs] == ["c_n", "output"]
    cn = np.frombuffer(answer.raw_output_contents[0], dtype=np.float32).reshape(2, 2, 6)
    out = np.frombuffer(answer.raw_output_contents[1], dtype=np.float32).reshape(5, 2, 3)
    np.testing.assert_allclose(cn, want_cn, atol=1e-5)
    np.testing.assert_allclose(out, want_out, atol=1e-5)
    # and the same through tritonclient's raw contents
    client = triton.InferenceServerClient(server[1])
    try:
        result = client.infer(
            "grpc-lstm", [_input("input", x), _input("h0", h0), _input("c0", c0)],
            outputs=[triton.InferRequestedOutput("h_n")],
        )  # fmt: skip
    finally:
        client.close()
    _, full_hn, _ = lstm_forward(seeded_params(LSTM), LSTM, x, h0, c0)
    np.testing.assert_allclose(result.as_numpy("h_n"), full_hn, atol=1e-5)
    assert result.as_numpy("output") is None  # only what was asked for


def test_bad_input_is_invalid_argument_naming_the_field(server: tuple[str, str]) -> None:
    client = triton.InferenceServerClient(server[1])
    try:
        with pytest.raises(InferenceServerException) as bad:
            client.infer("default", [_input("input", np.zeros((2, 1, 7), dtype=np.float32))])
        assert _status(bad.value) == "StatusCode.INVALID_ARGUMENT"
        assert "Expected 10, got 7" in bad.value.message()
        with pytest.raises(InferenceServerException) as bad:
            client.infer("default", [_input("inputs", np.zeros((2, 1, 10), dtype=np.float32))])
        assert "inputs.0" in bad.value.message()
        assert "unexpected input 'inputs'" in bad.value.message()
    finally:
        client.close()


def test_hostile_messages_get_a_clean_status(server: tuple[str, str]) -> None:
    """Oversized messages, a raw byte count that does not match its shape, unknown datatypes,
    70 dimensions, a huge sequence id, bytes that are no message: a status each, and the server
    goes on serving."""
    stub_call = "/inference.GRPCInferenceService/ModelInfer"

    def infer(req: Any) -> grpc.RpcError:
        with grpc.insecure_channel(server[1]) as channel:
            call: Any = channel.unary_unary(stub_call)
            data = req if isinstance(req, bytes) else req.SerializeToString()
            with pytest.raises(grpc.RpcError) as failed:
                call(data, timeout=30)
        return failed.value

    def request(shape: list[int], datatype: str = "FP32", raw: bytes | None = None) -> Any:
        req = service_pb2.ModelInferRequest(model_name="default")
        req.inputs.add(name="input", datatype=datatype, shape=shape)
        count = int(np.prod(shape)) if len(shape) < 10 else 0
        req.raw_input_contents.append(raw if raw is not None else b"\0" * (4 * count))
        return req

    too_big = infer(request([1 << 17, 1, 10]))  # 5 MiB of float32 over a 1 MiB limit
    assert too_big.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    short = infer(request([2, 1, 10], raw=b"\0" * 79))
    assert short.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "needs 80 bytes, got 79" in str(short.details())
    assert "inputs.0.raw_input_contents" in str(short.details())
    unknown = infer(request([2, 1, 10], datatype="FP8"))
    assert unknown.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "datatype must be one of" in str(unknown.details())
    deep = infer(request([1] * 70))
    assert deep.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "invalid shape" in str(deep.details())
    long_id = request([2, 1, 10])
    long_id.parameters["sequence_id"].string_param = "s" * 100_000
    long_id.parameters["sequence_start"].bool_param = True
    assert "at most" in str(infer(long_id).details())
    garbage = infer(b"\xff\xff\xff\xff")
    assert garbage.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expected a ModelInferRequest message" in str(garbage.details())
    wrong_type = request([2, 1, 10])
    wrong_type.parameters["sequence_start"].string_param = "yes"
    wrong_type.parameters["sequence_id"].int64_param = 5
    assert "sequence_start: expected a boolean" in str(infer(wrong_type).details())
    client = triton.InferenceServerClient(server[1])
    try:  # still serving
        assert client.infer("default", [_input("input", np.ones((1, 1, 10), np.float32))])
    finally:
        client.close()


def _metric(url: str, pattern: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def test_a_cancelled_call_cancels_its_forward(server: tuple[str, str]) -> None:
    """As a client that disconnects over HTTP: the call counted CANCELLED, no further time slice
    of its forward runs, and the server goes on serving."""
    url, target = server
    steps = 60_000
    timesteps = r"^rnn_serve_timesteps_total ([0-9.e+]+)$"
    cancelled = r'^rnn_serve_requests_total\{[^}]*status="CANCELLED"[^}]*\} ([0-9.e+]+)$'
    req = service_pb2.ModelInferRequest(model_name="grpc-long")
    req.inputs.add(name="input", datatype="FP32", shape=[steps, 1, 1])
    req.raw_input_contents.append(np.ones((steps, 1, 1), np.float32).tobytes())
    before = _metric(url, timesteps)
    with grpc.insecure_channel(target) as channel:
        future = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer.future(req)
        wait_until(lambda: _metric(url, timesteps) > before, 30)  # its slices are running
        future.cancel()
    wait_until(lambda: _metric(url, cancelled) >= 1, 10)
    time.sleep(0.2)  # a slice running when it was cancelled finishes; no other starts
    ran = _metric(url, timesteps) - before
    assert 0 < ran < steps, ran
    time.sleep(0.5)
    assert _metric(url, timesteps) - before == ran, "slices ran after the call was cancelled"
    client = triton.InferenceServerClient(target)
    try:
        assert client.infer("default", [_input("input", np.ones((1, 1, 10), np.float32))])
    finally:
        client.close()


def test_auth_and_deadline(tmp_path: Path) -> None:
    with grpc_server(tmp_path, RNN_SERVE_INFERENCE_KEYS=f'["{INFERENCE}"]',
                     RNN_SERVE_ADMIN_KEYS=f'["{ADMIN}"]') as (_, target):  # fmt: skip
        client = triton.InferenceServerClient(target)
        x = np.ones((3, 1, 10), np.float32)
        try:
            assert client.is_server_live()  # health needs no key
            with pytest.raises(InferenceServerException) as anonymous:
                client.infer("default", [_input("input", x)])
            assert _status(anonymous.value) == "StatusCode.UNAUTHENTICATED"
            with pytest.raises(InferenceServerException) as wrong:
                client.infer("default", [_input("input", x)],
                             headers={"authorization": "Bearer nope"})  # fmt: skip
            assert _status(wrong.value) == "StatusCode.UNAUTHENTICATED"
            ok = client.infer("default", [_input("input", x)],
                              headers={"authorization": f"Bearer {INFERENCE}"})  # fmt: skip
            assert ok.as_numpy("output").shape == (3, 1, 20)
            ok = client.infer("default", [_input("input", x)], headers={"x-api-key": INFERENCE})
            assert ok.as_numpy("output").shape == (3, 1, 20)
            with pytest.raises(InferenceServerException) as scope:
                client.unload_model("default", headers={"x-api-key": INFERENCE})
            assert _status(scope.value) == "StatusCode.PERMISSION_DENIED"
            client.load_model("default", headers={"x-api-key": ADMIN})
            # a deadline that passes before the forward is done: DEADLINE_EXCEEDED
            long = np.ones((4000, 64, 10), np.float32)
            with pytest.raises(InferenceServerException) as late:
                client.infer("default", [_input("input", long)], client_timeout=0.001,
                             headers={"x-api-key": INFERENCE})  # fmt: skip
            assert _status(late.value) == "StatusCode.DEADLINE_EXCEEDED"
            # the stream checks its caller once
            answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
            client.start_stream(lambda result, error: answers.put((result, error)))
            with contextlib.suppress(InferenceServerException):  # (if the end came first)
                client.async_stream_infer("default", [_input("input", x)])
            _, error = answers.get(timeout=30)
            assert "UNAUTHENTICATED" in str(error)
            client.stop_stream()
        finally:
            client.close()


# --- streaming sequences ---------------------------------------------------------------------
def _chunks(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    return [rng.standard_normal((int(rng.integers(1, 5)), 1, 10)).astype(np.float32)
            for _ in range(n)]  # fmt: skip


def _check_sequences(chunks: dict[Any, list[np.ndarray]], got: dict[str, np.ndarray]) -> None:
    """Each sequence's answers (by request id "<sequence>/<chunk>"), in order, equal the float64
    oracle over the sequence's whole input."""
    params = seeded_params(SEED)
    for s, xs in chunks.items():
        out = np.concatenate([got[f"{s}/{k}"] for k in range(len(xs))])
        want, _ = rnn_forward(params, SEED, np.concatenate(xs))
        np.testing.assert_allclose(out, want, atol=1e-5)


def test_sixteen_sequences_interleaved_on_one_stream(server: tuple[str, str]) -> None:
    """16 sequences on one start_stream, their chunks interleaved: every answer echoes its id,
    every sequence equals the oracle over its whole input, and an error on one request (a chunk
    for a sequence never started) leaves the stream open."""
    rng = np.random.default_rng(16)
    chunks = {s: _chunks(rng, 5) for s in range(1, 17)}
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = triton.InferenceServerClient(server[1])
    try:
        client.start_stream(lambda result, error: answers.put((result, error)))
        for k in range(5):
            for s, xs in chunks.items():
                client.async_stream_infer(
                    "default", [_input("input", xs[k])], request_id=f"{s}/{k}", sequence_id=s,
                    sequence_start=k == 0, sequence_end=k == 4,
                )  # fmt: skip
            if k == 2:
                client.async_stream_infer("default", [_input("input", chunks[1][0])],
                                          request_id="stray", sequence_id=999)  # fmt: skip
        got: dict[str, np.ndarray] = {}
        errors = []
        for _ in range(16 * 5 + 1):
            result, error = answers.get(timeout=60)
            if error is not None:
                errors.append(str(error))
            else:
                got[result.get_response().id] = result.as_numpy("output")
        client.stop_stream()
    finally:
        client.close()
    assert len(errors) == 1
    assert "sequence '999' is not open" in errors[0]
    _check_sequences(chunks, got)


def test_asyncio_client_streams_sequences(server: tuple[str, str]) -> None:
    rng = np.random.default_rng(3)
    chunks = {s: _chunks(rng, 4) for s in (f"a{i}" for i in range(16))}

    async def main() -> dict[str, np.ndarray]:
        client = triton_aio.InferenceServerClient(server[1])

        async def requests() -> Any:
            for k in range(4):
                for s, xs in chunks.items():
                    yield {
                        "model_name": "default", "inputs": [_input("input", xs[k])],
                        "request_id": f"{s}/{k}", "sequence_id": s,
                        "sequence_start": k == 0, "sequence_end": k == 3,
                    }  # fmt: skip

        got = {}
        try:
            async for result, error in client.stream_infer(requests()):
                assert error is None, error
                got[result.get_response().id] = result.as_numpy("output")
                if len(got) == 64:
                    break
        finally:
            await client.close()
        return got

    got = asyncio.run(main())
    _check_sequences(chunks, got)


def test_a_stream_that_opens_ten_thousand_sequences(server: tuple[str, str]) -> None:
    """Past RNN_SERVE_MAX_SESSIONS (64 here) each opening is refused with its own error
    message; the stream stays open and the server serves on."""
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    x = np.ones((1, 1, 10), np.float32)
    client = triton.InferenceServerClient(server[1])
    try:
        client.start_stream(lambda result, error: answers.put((result, error)))
        for s in range(10_001, 20_001):
            client.async_stream_infer("default", [_input("input", x)], request_id=str(s),
                                      sequence_id=s, sequence_start=True)  # fmt: skip
        opened, refused = [], 0
        for _ in range(10_000):
            result, error = answers.get(timeout=120)
            if error is None:
                opened.append(int(result.get_response().id))
            else:
                refused += 1
                assert "sessions" in str(error), str(error)
        client.async_stream_infer("default", [_input("input", x)], request_id="after")
        result, error = answers.get(timeout=60)
        assert error is None
        assert result.get_response().id == "after"
        for s in opened:  # (ended, for the module's other tests)
            client.async_stream_infer("default", [_input("input", x)], sequence_id=s,
                                      sequence_end=True)  # fmt: skip
        for _ in opened:
            assert answers.get(timeout=60)[1] is None
        client.stop_stream()
    finally:
        client.close()
    assert 0 < len(opened) <= 64
    assert len(opened) + refused == 10_000


@pytest.mark.redis
def test_sequences_in_redis_survive_a_replica_killed_mid_stream(tmp_path: Path) -> None:
    """Two replicas on one Redis. Eight sequences stream to the first, which is SIGKILLed
    with chunks in flight; the client opens a stream to the second and goes on with each
    sequence from its last answered chunk, resending the rest with start_step. Every sequence
    equals the oracle over its whole input: nothing lost, nothing applied twice."""
    from tests.support.redis_server import REDIS, RedisServer
    from tests.support.server import server_processes

    if REDIS is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    redis = RedisServer(tmp_path / "redis").start()
    rng = np.random.default_rng(21)
    chunks = {s: _chunks(rng, 6) for s in range(1, 9)}
    answered: dict[int, list[np.ndarray]] = {s: [] for s in chunks}
    steps: dict[int, int] = dict.fromkeys(chunks, 0)
    env = {"RNN_SERVE_SESSION_STORE": redis.url, "RNN_SERVE_LOG_LEVEL": "warning"}
    ports = [free_port(), free_port()]

    def send(client: Any, s: int, k: int, resend: bool = False) -> None:
        client.async_stream_infer(
            "default", [_input("input", chunks[s][k])], request_id=f"{s}/{k}", sequence_id=s,
            sequence_start=k == 0, sequence_end=k == 5,
            parameters={"start_step": steps[s]} if resend else None,
        )  # fmt: skip

    def take(answers: queue.Queue[tuple[Any, Any]], timeout: float) -> bool:
        """One answer into `answered`; False when the stream itself failed."""
        result, error = answers.get(timeout=timeout)
        if error is not None:
            return False
        s, k = map(int, result.get_response().id.split("/"))
        assert k == len(answered[s]), "answers of a sequence come in order"
        answered[s].append(result.as_numpy("output"))
        steps[s] = int(result.get_response().parameters["sequence_steps"].int64_param)
        return True

    try:
        with contextlib.ExitStack() as stack:
            [(_, first), _] = stack.enter_context(server_processes(*(
                (tmp_path / "models", tmp_path / f"{name}.log", {"RNN_SERVE_GRPC_PORT": str(port), **env})
                for name, port in zip("ab", ports, strict=True)), measured=False))  # fmt: skip
            answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
            a = triton.InferenceServerClient(f"127.0.0.1:{ports[0]}")
            a.start_stream(lambda result, error: answers.put((result, error)))
            for k in range(3):
                for s in chunks:
                    send(a, s, k)
            for _ in range(3 * len(chunks)):
                assert take(answers, 60)
            for s in chunks:
                send(a, s, 3)
            first.kill()  # chunks 3 in flight: some applied, some answered, some neither
            first.wait(30)
            while take(answers, 60):
                pass
            a.close()
            b = triton.InferenceServerClient(f"127.0.0.1:{ports[1]}")
            answers = queue.Queue()
            b.start_stream(lambda result, error: answers.put((result, error)))
            resent = 0
            for s in chunks:
                for k in range(len(answered[s]), 6):
                    send(b, s, k, resend=k == len(answered[s]))
                    resent += 1
            for _ in range(resent):
                assert take(answers, 60)
            b.stop_stream()
            b.close()
    finally:
        redis.stop()
    params = seeded_params(SEED)
    for s, xs in chunks.items():
        assert len(answered[s]) == 6
        x = np.concatenate(xs)
        assert steps[s] == x.shape[0]  # every chunk applied once
        want, _ = rnn_forward(params, SEED, x)
        np.testing.assert_allclose(np.concatenate(answered[s]), want, atol=1e-5)

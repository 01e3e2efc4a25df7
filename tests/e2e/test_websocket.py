"""Sessions as WebSockets against the real server, with the `websockets` client: JSON and binary
frames exact over whole sequences (32 sockets at once), a dropped stream resumed from its last
answered step with nothing lost or applied twice, errors that leave the stream open, and every
bound closing with its code: frame size, idle, open streams, keys, another key's session, a
client that never reads, SIGTERM."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from service.codecs.wsbinary import pack, unpack
from tests.oracle import forward, seeded_params
from tests.support import wait_until
from tests.support.helpers import b64, decode
from tests.support.server import server_process

pytestmark = pytest.mark.e2e
DEFAULT = {"input_size": 10, "hidden_size": 20, "num_layers": 2}  # the `default` model
PARAMS = seeded_params(DEFAULT)


def ws_url(http: str, path: str) -> str:
    return http.replace("http://", "ws://") + path


def hello(ws: ClientConnection) -> dict[str, Any]:
    first = json.loads(ws.recv(timeout=30))
    assert {"session_id", "model", "steps"} <= set(first), first
    return first  # type: ignore[no-any-return]


def chunk(ws: ClientConnection, x: np.ndarray, step: int) -> dict[str, Any]:
    ws.send(json.dumps({"input": b64(x), "start_step": step, "output_encoding": "b64"}))
    return json.loads(ws.recv(timeout=30))  # type: ignore[no-any-return]


def closed_with(ws: ClientConnection) -> tuple[int, str]:
    """The close frame the server sent (after any frames still on their way)."""
    try:
        for _ in range(100):
            ws.recv(timeout=30)
    except ConnectionClosed as exc:
        if exc.rcvd is None:
            raise AssertionError("the server sent no close frame") from exc
        return exc.rcvd.code, exc.rcvd.reason
    raise AssertionError("the stream was not closed")


def test_json_and_binary_frames_stream_a_sequence_exactly(live_server: str) -> None:
    x = np.random.default_rng(0).standard_normal((12, 10)).astype(np.float32)
    with connect(ws_url(live_server, "/v1/models/default/stream")) as ws:
        session = hello(ws)
        assert session["steps"] == 0
        outputs = []
        for k in range(3):  # JSON frames
            answer = chunk(ws, x[4 * k : 4 * k + 2], 4 * k)
            assert answer["steps"] == 4 * k + 2
            outputs.append(decode(answer["output"]))
            ws.send(pack(x[4 * k + 2 : 4 * k + 4], "float32", 4 * k + 2))  # binary frames
            step, dtype, out = unpack(ws.recv(timeout=30))  # type: ignore[arg-type]
            assert (step, dtype, out.shape) == (4 * k + 4, "float32", (2, 20))
            outputs.append(out)
    want, _, _ = forward(PARAMS, DEFAULT, x)
    np.testing.assert_allclose(np.concatenate(outputs), want, atol=1e-5)
    info = httpx.get(f"{live_server}/v1/sessions/{session['session_id']}").json()
    assert info["steps"] == 12  # the same session store as HTTP's


def test_32_sockets_at_once_each_exact(live_server: str) -> None:
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((10, 10)).astype(np.float32) for _ in range(32)]
    got: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []

    def stream(i: int) -> None:
        try:
            with connect(ws_url(live_server, "/v1/models/default/stream")) as ws:
                hello(ws)
                got[i] = [
                    decode(chunk(ws, inputs[i][t : t + 2], t)["output"]) for t in range(0, 10, 2)
                ]
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    for i, x in enumerate(inputs):
        want, _, _ = forward(PARAMS, DEFAULT, x)
        np.testing.assert_allclose(np.concatenate(got[i]), want, atol=1e-5)


def test_a_dropped_stream_resumes_from_its_last_answered_step(live_server: str) -> None:
    """A chunk sent and never answered (the connection dropped): on reconnecting, the session's
    `steps` says whether it was applied; resent with the same start_step it is answered once
    (the kept answer if it was), and the sequence is exact."""
    x = np.random.default_rng(2).standard_normal((8, 10)).astype(np.float32)
    outputs = []
    with connect(ws_url(live_server, "/v1/models/default/stream")) as ws:
        sid = hello(ws)["session_id"]
        outputs.append(decode(chunk(ws, x[:3], 0)["output"]))
        ws.send(json.dumps({"input": b64(x[3:5]), "start_step": 3, "output_encoding": "b64"}))
        # dropped before its answer is read
    with connect(ws_url(live_server, f"/v1/sessions/{sid}/stream")) as ws:
        steps = hello(ws)["steps"]
        assert steps in (3, 5)  # applied or not: the client resends from its last answered step
        again = chunk(ws, x[3:5], 3)
        assert again["steps"] == 5, again
        outputs.append(decode(again["output"]))
        outputs.append(decode(chunk(ws, x[5:], 5)["output"]))
    want, _, _ = forward(PARAMS, DEFAULT, x)
    np.testing.assert_allclose(np.concatenate(outputs), want, atol=1e-5)
    with connect(ws_url(live_server, f"/v1/models/default/stream?session_id={sid}")) as ws:
        assert hello(ws)["steps"] == 8


def test_a_chunks_error_is_a_message_and_the_stream_goes_on(live_server: str) -> None:
    x = np.zeros((2, 10), np.float32)
    with connect(ws_url(live_server, "/v1/models/default/stream")) as ws:
        hello(ws)
        mismatch = pack(x, "float32", 0)[:-4]  # a header whose shape its bytes do not fill
        for bad in ("not json", json.dumps({"input": [[1.0, 2.0]]}), b"RNS1 short", mismatch,
                    json.dumps({"input": b64(x), "start_step": 7})):  # fmt: skip
            ws.send(bad)
            error = json.loads(ws.recv(timeout=30))["error"]
            assert error["status"] in (400, 409, 422), error
            assert error["detail"]
        assert chunk(ws, x, 0)["steps"] == 2  # still open, still exact about its steps
        ws.send(pack(np.zeros((2, 3, 10), np.float32), "float32", 2))  # 3-D for a 2-D session
        assert json.loads(ws.recv(timeout=30))["error"]["status"] in (409, 422)


def test_an_unknown_model_or_session_closes_with_its_code(live_server: str) -> None:
    with connect(ws_url(live_server, "/v1/models/nope/stream")) as ws:
        assert closed_with(ws)[0] == 4404
    with connect(ws_url(live_server, "/v1/sessions/" + "a" * 22 + "/stream")) as ws:
        assert closed_with(ws)[0] == 4410
    with connect(ws_url(live_server, "/v1/models/default/stream?api_key=secret")) as ws:
        code, reason = closed_with(ws)
        assert code == 4400
        assert "access logs" in reason


KEY, OTHER = "ws-test-key-0123456789", "ws-other-key-0123456789"


def test_bounds_and_keys_close_with_a_code_and_a_reason(tmp_path: Path) -> None:
    env = {"RNN_SERVE_INFERENCE_KEYS": json.dumps([KEY, OTHER]), "RNN_SERVE_MAX_STREAMS": "3",
           "RNN_SERVE_STREAM_IDLE_TIMEOUT_S": "1", "RNN_SERVE_MAX_BODY_BYTES": "4096",
           "RNN_SERVE_LOG_LEVEL": "warning"}  # fmt: skip
    with server_process(tmp_path / "models", tmp_path / "server.log", **env) as (url, _):
        stream = ws_url(url, "/v1/models/default/stream")
        with connect(stream) as ws:
            assert closed_with(ws)[0] == 4401  # no key
        # a browser's way: the key in the protocol list, beside rnn-serve (selected)
        with connect(stream, subprotocols=["rnn-serve", f"rnn-serve.key.{KEY}"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "rnn-serve"
            sid = hello(ws)["session_id"]
            assert chunk(ws, np.zeros((1, 10), np.float32), 0)["steps"] == 1
            ws.send(b"\0" * 5000)  # over RNN_SERVE_MAX_BODY_BYTES
            assert closed_with(ws)[0] == 1009
        mine = {"Authorization": f"Bearer {KEY}"}
        theirs = {"x-api-key": OTHER}
        with connect(ws_url(url, f"/v1/sessions/{sid}/stream"), additional_headers=theirs) as ws:
            assert closed_with(ws)[0] == 4410  # another key's session is no session of theirs
        with connect(stream, additional_headers=mine) as ws:
            hello(ws)
            code, reason = closed_with(ws)  # sends nothing for over a second
            assert code == 4408
            assert "idle" in reason
        with contextlib.ExitStack() as stack:
            for _ in range(3):
                hello(stack.enter_context(connect(stream, additional_headers=mine)))
            with connect(stream, additional_headers=mine) as extra:
                assert closed_with(extra)[0] == 1013  # RNN_SERVE_MAX_STREAMS
        assert httpx.get(f"{url}/readyz").status_code == 200


def open_streams(url: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("rnn_serve_websocket_streams "):
            return float(line.split()[1])
    raise AssertionError("no rnn_serve_websocket_streams gauge")


def test_sockets_past_the_cap_are_refused_at_once(tmp_path: Path) -> None:
    """500 sockets opened and never used, past the cap of 100: the first 100 get their hello,
    every other one is refused with 1013 at once, and the server stays ready. The idle timeout
    is long here, so no slot frees while the sockets open however slow the machine."""
    env = {"RNN_SERVE_MAX_STREAMS": "100", "RNN_SERVE_STREAM_IDLE_TIMEOUT_S": "300",
           "RNN_SERVE_LOG_LEVEL": "warning"}  # fmt: skip
    with server_process(tmp_path / "models", tmp_path / "server.log", **env) as (url, _):
        stream = ws_url(url, "/v1/models/default/stream")
        accepted = refused = 0
        with contextlib.ExitStack() as stack:
            idle = [stack.enter_context(connect(stream, open_timeout=60)) for _ in range(500)]
            for ws in idle:
                try:
                    accepted += "session_id" in json.loads(ws.recv(timeout=30))
                except ConnectionClosed as exc:
                    refused += exc.rcvd is not None and exc.rcvd.code == 1013
            assert (accepted, refused) == (100, 400)
            assert open_streams(url) == 100
            assert httpx.get(f"{url}/readyz").status_code == 200
        wait_until(lambda: open_streams(url) == 0, 60)


def test_a_client_that_never_reads_is_dropped_and_others_are_served(tmp_path: Path) -> None:
    """A client that sends and never reads its answers is dropped when its answers stop going
    out, while it still holds on; others are served meanwhile, exactly. Then SIGTERM closes the
    streams still open, so that their clients reconnect (in this test for its server's start)."""
    env = {"RNN_SERVE_STREAM_IDLE_TIMEOUT_S": "2", "RNN_SERVE_LOG_LEVEL": "warning"}
    with server_process(tmp_path / "models", tmp_path / "server.log", **env) as (url, proc):
        stream = ws_url(url, "/v1/models/default/stream")
        big = b64(np.zeros((1000, 10), np.float32))
        with connect(stream, max_size=None, max_queue=1) as greedy:
            hello(greedy)
            for k in range(400):  # never reads: its answers (hundreds of KB each) back up
                try:
                    greedy.send(json.dumps({"input": big, "start_step": 1000 * k}))
                except ConnectionClosed:
                    break
            wait_until(lambda: open_streams(url) == 0, 60)
            x = np.random.default_rng(5).standard_normal((4, 10)).astype(np.float32)
            with connect(stream) as ws:  # others are served
                hello(ws)
                got = decode(chunk(ws, x, 0)["output"])
            np.testing.assert_allclose(got, forward(PARAMS, DEFAULT, x)[0], atol=1e-5)
        assert httpx.get(f"{url}/readyz").status_code == 200

        # SIGTERM closes the streams, so that clients reconnect
        with connect(ws_url(url, "/v1/models/default/stream")) as ws:
            hello(ws)
            proc.send_signal(signal.SIGTERM)
            code, _ = closed_with(ws)
        assert code in (1001, 1012), code  # going away / service restart: reconnect elsewhere


def test_through_nginx_a_killed_replicas_streams_resume_on_the_other(tmp_path: Path) -> None:
    """Two replicas behind the shipped nginx template, sessions in Redis: streams opened through
    nginx, the replica holding them SIGKILLed mid-stream, each reconnected through nginx (to the
    other) from its last answered step: nothing lost, nothing applied twice."""
    from tests.e2e.test_scale_out import NGINX, nginx
    from tests.support.redis_server import REDIS, RedisServer
    from tests.support.server import server_processes

    if NGINX is None or REDIS is None:
        pytest.skip("needs nginx and redis-server (.ci/run installs them)")
    redis = RedisServer(tmp_path / "redis").start()
    env = {"RNN_SERVE_SESSION_STORE": redis.url, "RNN_SERVE_LOG_LEVEL": "warning"}
    rng = np.random.default_rng(7)
    inputs = [rng.standard_normal((8, 10)).astype(np.float32) for _ in range(8)]
    try:
        launches = [(tmp_path / "models", tmp_path / f"{n}.log", env) for n in "ab"]
        with server_processes(*launches, measured=False) as replicas:
            lb_iter = nginx(tmp_path / "nginx", [u.removeprefix("http://") for u, _ in replicas])
            lb = next(lb_iter)
            try:
                sessions: list[str] = []
                outputs: list[list[np.ndarray]] = [[] for _ in inputs]
                for i, x in enumerate(inputs):
                    with connect(ws_url(lb, "/v1/models/default/stream")) as ws:
                        sessions.append(hello(ws)["session_id"])
                        outputs[i].append(decode(chunk(ws, x[:4], 0)["output"]))
                on_a = httpx.get(f"{replicas[0][0]}/metrics").text
                assert 'protocol="websocket"' in on_a  # some streams are on the one killed
                replicas[0][1].kill()  # whatever it held in memory is gone
                replicas[0][1].wait(30)
                for i, x in enumerate(inputs):
                    resumed = None
                    for _ in range(5):  # nginx takes the dead replica out after its failure
                        try:
                            resumed = connect(ws_url(lb, f"/v1/sessions/{sessions[i]}/stream"))
                            break
                        except Exception:
                            continue
                    assert resumed is not None
                    with resumed as ws:
                        assert hello(ws)["steps"] == 4
                        outputs[i].append(decode(chunk(ws, x[4:], 4)["output"]))
                for x, got in zip(inputs, outputs, strict=True):
                    want, _, _ = forward(PARAMS, DEFAULT, x)
                    np.testing.assert_allclose(np.concatenate(got), want, atol=1e-5)
            finally:
                next(lb_iter, None)
    finally:
        redis.stop()

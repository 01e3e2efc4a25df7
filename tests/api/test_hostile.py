"""What a hostile client found, one test per finding (the row of the report it fixes), in v1 and
the Open Inference Protocol, with and without API keys where both apply."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.catalog.folder import Repository
from service.core.errors import ModelConflict
from service.core.metrics import Metrics
from service.core.schemas.config import RNNConfig
from tests.conftest import make_settings, open_client
from tests.support.helpers import Models, b64, open_session

pytestmark = pytest.mark.anyio

KEY, OTHER = "infer-key-0123456789", "other-key-0123456789"
ADMIN = "admin-key-0123456789"


@pytest.fixture(params=["open", "keys"])
async def server(
    request: pytest.FixtureRequest, anyio_backend: str
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """A server with no keys, or with keys (and the headers a request then carries)."""
    if request.param == "open":
        settings, headers = make_settings(), {}
    else:
        settings = make_settings(inference_keys=[KEY, OTHER], admin_keys=[ADMIN])
        headers = {"Authorization": f"Bearer {ADMIN}"}
    async for c in open_client(settings):
        yield c, headers


def seq_body(x: np.ndarray, **params: Any) -> dict[str, Any]:
    return {
        "parameters": params,
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                    "data": x.reshape(-1).tolist()}],
    }  # fmt: skip


def oip_error(r: httpx.Response, *fragments: str) -> str:
    assert r.status_code == 400, r.text
    error: str = r.json()["error"]
    for fragment in fragments:
        assert fragment in error, error
    return error


def problem(r: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    for fragment in fragments:
        assert fragment in r.text, r.text
    return body


# --- 1: an OIP sequence ends under auth, and a resend of its end chunk gets its answer ----------
async def test_row1_sequence_end_closes_with_and_without_keys(
    server: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    c, h = server
    x = np.random.default_rng(1).standard_normal((4, 1, 10)).astype(np.float32)
    url = "/v2/models/default/infer"
    r = await c.post(url, json=seq_body(x[:2], sequence_id=77, sequence_start=True), headers=h)
    assert r.status_code == 200, r.text
    end = seq_body(x[2:], sequence_id=77, sequence_end=True, start_step=2)
    first = await c.post(url, json=end, headers=h)
    assert first.status_code == 200, first.text
    assert first.json()["parameters"]["sequence_steps"] == 4
    # the answer was lost: the same chunk again gets the kept answer, nothing runs twice
    again = await c.post(url, json=end, headers=h)
    assert again.status_code == 200, again.text
    assert again.json()["outputs"] == first.json()["outputs"]
    assert again.json()["parameters"]["sequence_steps"] == 4
    # the sequence is closed: any other chunk is refused
    more = seq_body(x[2:], sequence_id=77, start_step=4)
    oip_error(await c.post(url, json=more, headers=h), "not open")
    # start and end in one request: closed at once, too
    both = seq_body(x, sequence_id=78, sequence_start=True, sequence_end=True)
    assert (await c.post(url, json=both, headers=h)).status_code == 200
    oip_error(await c.post(url, json=seq_body(x, sequence_id=78), headers=h), "not open")


# --- 2: shapes whose dimensions overflow beside a 0, or with too many dimensions ----------------
HUGE = [4294967296, 4294967296, 0]
DEEP = [1] * 65


@pytest.mark.parametrize("shape", [HUGE, DEEP], ids=["overflow", "65-dims"])
@pytest.mark.parametrize("field", ["input", "h0"])
@pytest.mark.parametrize("form", ["data", "b64"])
async def test_row2_v1_shapes_that_cannot_be_made_are_422(
    server: tuple[httpx.AsyncClient, dict[str, str]], shape: list[int], field: str, form: str
) -> None:
    c, h = server
    tensor = {"shape": shape, "dtype": "float32", form: [] if form == "data" else ""}
    body: dict[str, Any] = {"input": [[0.0] * 10]}
    body[field] = tensor
    r = await c.post("/v1/models/default/forward", json=body, headers=h)
    err = problem(r, 422)
    assert ["body", field, "shape"] in [e["loc"] for e in err["errors"]], r.text
    inline = {"config": {"mode": "LSTM", "input_size": 10, "hidden_size": 4}, **body}
    inline["c0" if field == "h0" else field] = tensor
    if field == "h0":
        inline["h0"] = tensor
    r = await c.post("/v1/rnn/forward", json=inline, headers=h)
    problem(r, 422, "shape")


async def test_row2_oip_shape_overflow_is_400(
    server: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    c, h = server
    body = {"inputs": [{"name": "input", "shape": HUGE, "datatype": "FP32", "data": []}]}
    oip_error(await c.post("/v2/models/default/infer", json=body, headers=h), "shape")
    raw = {"inputs": [{"name": "input", "shape": HUGE, "datatype": "FP32",
                       "parameters": {"binary_data_size": 0}}]}  # fmt: skip
    head = httpx.Request("POST", "/", json=raw).content
    r = await c.post(
        "/v2/models/default/infer", content=head,
        headers={**h, "Inference-Header-Content-Length": str(len(head)),
                 "content-type": "application/octet-stream"},
    )  # fmt: skip
    oip_error(r, "shape")


# --- 3: register and delete racing: 409, never an assert or a config with another's weights -----
def test_row3_a_model_deleted_as_it_is_registered_is_409(tmp_path: Path) -> None:
    settings = make_settings(model_repository=tmp_path / "repo")
    registry = Models(settings, Metrics())
    repo: Repository = registry.catalog.repo  # type: ignore[assignment]
    create = repo.create

    def create_then_deleted(name: str, config: RNNConfig, weights: bytes) -> bool:
        made = create(name, config, weights)
        repo.delete(name)  # another request's delete, landing between create and lookup
        return made

    repo.create = create_then_deleted  # type: ignore[method-assign]
    with pytest.raises(ModelConflict, match="changed concurrently"):
        registry.register("racy", RNNConfig(input_size=2, hidden_size=3))


def test_row3_a_reader_never_pairs_a_config_with_another_models_weights(tmp_path: Path) -> None:
    settings = make_settings(model_repository=tmp_path / "repo")
    registry = Models(settings, Metrics())
    registry.register("racy", RNNConfig(input_size=2, hidden_size=3))
    spec = registry.catalog.get("racy")
    repo: Repository = registry.catalog.repo  # type: ignore[assignment]
    read = repo.read_weights

    def replaced_meanwhile(name: str, config: Any = None) -> Any:
        # deleted and registered again with another config between the lookup and the read
        repo.delete(name)
        repo.create(name, RNNConfig(input_size=5, hidden_size=7), b"")
        return read(name, config)

    repo.read_weights = replaced_meanwhile  # type: ignore[method-assign]
    with pytest.raises(ModelConflict, match="changed concurrently"):
        registry.module("racy", spec.config)


async def test_row3_register_and_delete_race_answers_only_4xx_and_2xx(
    server: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    import asyncio

    c, h = server
    body = {"name": "racy", "config": {"input_size": 2, "hidden_size": 3}}

    async def register() -> int:
        return (await c.post("/v1/models", json=body, headers=h)).status_code

    async def delete() -> int:
        return (await c.delete("/v1/models/racy", headers=h)).status_code

    statuses = await asyncio.gather(*[f() for _ in range(25) for f in (register, delete)])
    assert set(statuses) <= {200, 201, 204, 404, 409}, statuses


# --- 5: OIP sequence ids are a uint64 or a bounded string; flags are booleans --------------------
@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"sequence_id": "x" * 5_000_000, "sequence_start": True}, "at most 256 characters"),
        ({"sequence_id": {"a": 1}, "sequence_start": True}, "uint64 or a string"),
        ({"sequence_id": True, "sequence_start": True}, "uint64 or a string"),
        ({"sequence_id": 1.5, "sequence_start": True}, "uint64 or a string"),
        ({"sequence_id": -3, "sequence_start": True}, "uint64 or a string"),
        ({"sequence_id": 1 << 64, "sequence_start": True}, "uint64 or a string"),
        ({"sequence_id": 5, "sequence_start": "yes"}, "sequence_start: expected a boolean"),
        ({"sequence_id": 5, "sequence_end": 1}, "sequence_end: expected a boolean"),
        ({"sequence_start": True}, "need a sequence_id"),
    ],
)
async def test_row5_sequence_parameters_are_typed(
    server: tuple[httpx.AsyncClient, dict[str, str]], params: dict[str, Any], fragment: str
) -> None:
    c, h = server
    x = np.zeros((1, 10), np.float32)
    r = await c.post("/v2/models/default/infer", json=seq_body(x, **params), headers=h)
    oip_error(r, fragment)


async def test_row5_numeric_and_string_ids_are_different_sequences(
    server: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    c, h = server
    x = np.zeros((1, 10), np.float32)
    url = "/v2/models/default/infer"
    ok = await c.post(url, json=seq_body(x, sequence_id=1, sequence_start=True), headers=h)
    assert ok.status_code == 200, ok.text
    oip_error(await c.post(url, json=seq_body(x, sequence_id="1"), headers=h), "not open")
    assert (await c.post(url, json=seq_body(x, sequence_id=1), headers=h)).status_code == 200
    longest = "s" * 256  # the bound itself is taken
    r = await c.post(url, json=seq_body(x, sequence_id=longest, sequence_start=True), headers=h)
    assert r.status_code == 200, r.text


# --- 6: Content-Encoding is honoured (gzip, deflate) within the body limit, or 415 ---------------
async def test_row6_gzip_and_deflate_bodies_are_decoded(
    server: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    c, h = server
    x = np.random.default_rng(6).standard_normal((3, 2, 10)).astype(np.float32)
    raw = httpx.Request("POST", "/", json={"input": x.tolist()}).content
    plain = await c.post("/v1/models/default/forward", content=raw,
                         headers={**h, "content-type": "application/json"})  # fmt: skip
    assert plain.status_code == 200, plain.text
    for coding, packed in (("gzip", gzip.compress(raw)), ("deflate", zlib.compress(raw))):
        r = await c.post("/v1/models/default/forward", content=packed, headers={
            **h, "content-type": "application/json", "content-encoding": coding})  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.json()["output"] == plain.json()["output"]
    # a route FastAPI serves (not a lean one) takes a gzip body too
    reg = {"name": "zipped", "config": {"input_size": 2, "hidden_size": 3}}
    packed = gzip.compress(httpx.Request("POST", "/", json=reg).content)
    r = await c.post("/v1/models", content=packed, headers={
        **h, "content-type": "application/json", "content-encoding": "gzip"})  # fmt: skip
    assert r.status_code == 201, r.text


async def test_row6_bad_or_unknown_encodings_are_refused(
    server: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    c, h = server
    raw = httpx.Request("POST", "/", json={"input": [[0.0] * 10]}).content
    base = {**h, "content-type": "application/json"}
    for path in ("/v1/models/default/forward", "/v1/models"):
        r = await c.post(path, content=raw, headers={**base, "content-encoding": "gzip"})
        problem(r, 400, "not valid gzip")
        r = await c.post(path, content=raw, headers={**base, "content-encoding": "br"})
        problem(r, 415, "Content-Encoding", "gzip or deflate")
    truncated = gzip.compress(raw)[:-6]
    r = await c.post("/v1/models/default/forward", content=truncated,
                     headers={**base, "content-encoding": "gzip"})  # fmt: skip
    problem(r, 400, "gzip")
    oip = httpx.Request("POST", "/", json={"inputs": []}).content
    r = await c.post("/v2/models/default/infer", content=oip,
                     headers={**base, "content-encoding": "br"})  # fmt: skip
    oip_error(r, "Content-Encoding")  # (415 is 400 in the protocol)


async def test_row6_a_gzip_bomb_stops_at_the_body_limit(anyio_backend: str) -> None:
    async for c in open_client(make_settings(max_body_bytes=100_000)):
        bomb = gzip.compress(b"[" + b"0," * 5_000_000 + b"0]")  # ~10 MB decoded, ~10 KB sent
        assert len(bomb) < 100_000
        r = await c.post("/v1/models/default/forward", content=bomb,
                         headers={"content-type": "application/json",
                                  "content-encoding": "gzip"})  # fmt: skip
        problem(r, 413, "decompresses to over the limit of 100000 bytes")


# --- 7: one Authorization header; another key's session id is never revealed --------------------
async def test_row7_repeated_authorization_is_401(anyio_backend: str) -> None:
    async for c in open_client(make_settings(inference_keys=[KEY], admin_keys=[ADMIN])):
        two = [("Authorization", f"Bearer {ADMIN}"), ("Authorization", f"Bearer {KEY}")]
        r = await c.post("/v1/models", json={"name": "m", "config": {"input_size": 2,
                         "hidden_size": 2}}, headers=two)  # fmt: skip
        problem(r, 401, "one Authorization header")
        r = await c.post("/v2/models/default/infer", json={"inputs": []}, headers=two)
        assert r.status_code == 401
        assert "one Authorization" in r.json()["error"]


async def test_row7_another_keys_session_id_is_a_new_session_of_ones_own(
    anyio_backend: str,
) -> None:
    async for c in open_client(make_settings(inference_keys=[KEY, OTHER])):
        sid = "Zq3xY_7-abcdefghijklmnopqr"
        mine, theirs = {"Authorization": f"Bearer {KEY}"}, {"Authorization": f"Bearer {OTHER}"}
        x = np.ones((2, 1, 10), np.float32)
        a = await c.post("/v1/models/default/sessions", json={},
                         headers={**mine, "X-Session-ID": sid})  # fmt: skip
        assert a.status_code == 201
        r = await c.post(f"/v1/sessions/{sid}/forward", json={"input": b64(x)}, headers=mine)
        assert r.json()["steps"] == 2
        # the other key asks for the same id: as for an unknown one, it gets its own session
        b = await c.post("/v1/models/default/sessions", json={},
                         headers={**theirs, "X-Session-ID": sid})  # fmt: skip
        assert b.status_code == 201, b.text
        assert b.json()["session_id"] == sid
        assert b.json()["steps"] == 0
        assert (await c.get(f"/v1/sessions/{sid}", headers=mine)).json()["steps"] == 2
        assert (await c.get(f"/v1/sessions/{sid}", headers=theirs)).json()["steps"] == 0
        # its own id again is taken (its own session), as before
        again = await c.post("/v1/models/default/sessions", json={},
                             headers={**theirs, "X-Session-ID": sid})  # fmt: skip
        problem(again, 409, "taken")
        assert (await c.delete(f"/v1/sessions/{sid}", headers=theirs)).status_code == 204
        assert (await c.get(f"/v1/sessions/{sid}", headers=mine)).json()["steps"] == 2


# --- 8: a session that could never fit the state budget is refused at its opening ---------------
async def test_row8_sessions_over_the_state_budget_alone_are_413(anyio_backend: str) -> None:
    # the default model: 2 layers x 20 float32 = 160 bytes a sequence
    async for c in open_client(make_settings(max_session_state_bytes=10_000)):
        r = await c.post("/v1/models/default/sessions", json={"batch_size": 2000})
        problem(r, 413, "RNN_SERVE_MAX_SESSION_STATE_BYTES")
        h0 = b64(np.zeros((2, 2000, 20), np.float32))
        problem(await c.post("/v1/models/default/sessions", json={"h0": h0}), 413)
        sid = await open_session(c)  # batch unknown: the first chunk says it
        x = np.zeros((1, 2000, 10), np.float32)
        problem(await c.post(f"/v1/sessions/{sid}/forward", json={"input": b64(x)}), 413)
        ok = await c.post("/v1/models/default/sessions", json={"batch_size": 50})
        assert ok.status_code == 201, ok.text


# --- 9: HEAD on GET routes; start_step is an integer only ----------------------------------------
@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/v2/health/ready", "/v1/models",
                                  "/v2/models/default", "/metrics"])  # fmt: skip
async def test_row9_head_answers_as_get_without_a_body(
    server: tuple[httpx.AsyncClient, dict[str, str]], path: str
) -> None:
    c, h = server
    get = await c.get(path, headers=h)
    head = await c.head(path, headers=h)
    assert head.status_code == get.status_code == 200, (head.status_code, get.status_code)
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


@pytest.mark.parametrize("step", [True, "1", 1.0, -1])
async def test_row9_start_step_is_an_integer(
    server: tuple[httpx.AsyncClient, dict[str, str]], step: Any
) -> None:
    c, h = server
    r = await c.post("/v1/models/default/sessions", json={}, headers=h)
    sid = r.json()["session_id"]
    x = np.zeros((1, 1, 10), np.float32)
    r = await c.post(f"/v1/sessions/{sid}/forward", json={"input": b64(x), "start_step": step},
                     headers=h)  # fmt: skip
    body = problem(r, 422)
    assert ["body", "start_step"] in [e["loc"] for e in body["errors"]]
    oip = seq_body(x[0], sequence_id=9, sequence_start=True, start_step=step)
    oip_error(await c.post("/v2/models/default/infer", json=oip, headers=h), "start_step")
    r = await c.post("/v1/models/default/sessions", json={"batch_size": True}, headers=h)
    problem(r, 422, "batch_size")

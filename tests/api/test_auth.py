"""API keys: two scopes, 401 and 403 in each protocol's form, open health and metrics, keys from
a file, sessions and OIP sequences owned by the key that opened them, and session ids a client
cannot guess or choose weakly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.dataplane.keys import Keys
from tests.conftest import make_settings, open_client
from tests.support.helpers import b64

pytestmark = pytest.mark.anyio

ADMIN, INFER, OTHER = "admin-key-0123456789", "infer-key-0123456789", "other-key-0123456789"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def locked(tmp_path: Path, anyio_backend: str) -> AsyncIterator[httpx.AsyncClient]:
    keys = tmp_path / "keys"
    keys.write_text(f"# rnn-serve keys\ninference:{OTHER}\n")
    settings = make_settings(admin_keys=[ADMIN], inference_keys=[INFER], api_keys_file=keys)
    async for c in open_client(settings):
        yield c


FORWARD = {"input": [[0.0] * 10]}


async def test_no_key_is_401_with_www_authenticate_in_each_protocols_form(
    locked: httpx.AsyncClient,
) -> None:
    r = await locked.post("/v1/models/default/forward", json=FORWARD)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="rnn-serve"'
    assert r.headers["content-type"] == "application/problem+json"
    assert "Bearer" in r.json()["detail"]
    r = await locked.get("/v2/models/default")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert set(r.json()) == {"error"}
    for wrong in ("Bearer nope", "Basic YWRtaW46YWRtaW4=", "Bearer "):
        r = await locked.get("/v1/models", headers={"Authorization": wrong})
        assert r.status_code == 401, wrong


async def test_scopes(locked: httpx.AsyncClient) -> None:
    for key in (INFER, OTHER, ADMIN):  # inference: keys of both scopes, from settings or file
        r = await locked.post("/v1/models/default/forward", json=FORWARD, headers=bearer(key))
        assert r.status_code == 200, (key, r.text)
    config = {"input_size": 2, "hidden_size": 2}
    for call in (
        locked.post("/v1/models", json={"name": "m", "config": config}, headers=bearer(INFER)),
        locked.delete("/v1/models/default", headers=bearer(INFER)),
        locked.get("/v1/models/default/weights", headers=bearer(INFER)),
        locked.post("/v1/rnn/forward", json={"config": config, "input": [[0.0, 0.0]]},
                    headers=bearer(INFER)),
    ):  # fmt: skip
        r = await call
        assert r.status_code == 403, r.text
        assert "admin scope" in r.json()["detail"]
    r = await locked.post("/v1/models", json={"name": "m", "config": config}, headers=bearer(ADMIN))
    assert r.status_code == 201
    r = await locked.post("/v1/rnn/forward", json={"config": config, "input": [[0.0, 0.0]]},
                          headers=bearer(ADMIN))  # fmt: skip
    assert r.status_code == 200


async def test_health_readiness_and_metrics_stay_open(locked: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready",
                 "/openapi.json"):  # fmt: skip
        assert (await locked.get(path)).status_code == 200, path


async def test_metrics_can_need_an_admin_key(anyio_backend: str) -> None:
    async for c in open_client(make_settings(admin_keys=[ADMIN], protect_metrics=True)):
        assert (await c.get("/metrics")).status_code == 401
        assert (await c.get("/metrics", headers=bearer(ADMIN))).status_code == 200
        assert (await c.get("/healthz")).status_code == 200


async def test_a_session_belongs_to_the_key_that_opened_it(locked: httpx.AsyncClient) -> None:
    sid = (await locked.post("/v1/models/default/sessions", json={}, headers=bearer(INFER))).json()[
        "session_id"
    ]
    chunk = {"input": b64(np.zeros((2, 10), np.float32))}
    for call in (
        locked.post(f"/v1/sessions/{sid}/forward", json=chunk, headers=bearer(OTHER)),
        locked.get(f"/v1/sessions/{sid}", headers=bearer(OTHER)),
        locked.delete(f"/v1/sessions/{sid}", headers=bearer(OTHER)),
    ):
        r = await call
        assert r.status_code == 404, r.text  # not 403: its existence is not confirmed
    r = await locked.post(f"/v1/sessions/{sid}/forward", json=chunk, headers=bearer(INFER))
    assert r.status_code == 200
    assert r.json()["steps"] == 2


async def test_oip_sequences_are_per_key(locked: httpx.AsyncClient) -> None:
    def body(start: bool) -> dict[str, Any]:
        return {
            "parameters": {"sequence_id": 1, "sequence_start": start},
            "inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": [0.5] * 10}],
        }

    first = await locked.post("/v2/models/default/infer", json=body(True), headers=bearer(INFER))
    assert first.status_code == 200, first.text
    # another key's sequence 1 is not this one: it can neither continue nor reset it
    r = await locked.post("/v2/models/default/infer", json=body(False), headers=bearer(OTHER))
    assert r.status_code == 400
    assert "not open" in r.json()["error"]
    assert (await locked.post("/v2/models/default/infer", json=body(True),
                              headers=bearer(OTHER))).status_code == 200  # its own, new  # fmt: skip
    again = await locked.post("/v2/models/default/infer", json=body(False), headers=bearer(INFER))
    assert again.status_code == 200
    out = next(o for o in again.json()["outputs"] if o["name"] == "output")
    first_out = next(o for o in first.json()["outputs"] if o["name"] == "output")
    assert out["data"] != first_out["data"]  # it continued from the state the first step left


async def test_session_ids_are_unguessable_and_weak_ones_are_not_taken(
    client: httpx.AsyncClient,
) -> None:
    made = (await client.post("/v1/models/default/sessions", json={})).json()["session_id"]
    assert len(made) >= 22  # 16 random bytes, URL-safe base64
    weak = await client.post(
        "/v1/models/default/sessions", json={}, headers={"X-Session-ID": "session-000001"}
    )
    assert weak.json()["session_id"] != "session-000001"  # too short to be 128 random bits
    strong_id = "Zq3xY_7-abcdefghijklmnopqr"
    strong = await client.post(
        "/v1/models/default/sessions", json={}, headers={"X-Session-ID": strong_id}
    )
    assert strong.json()["session_id"] == strong_id


def test_keys_are_kept_as_digests_and_compared_whole(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("admin:s3cret-admin\n\n# comment\ninference: s3cret-infer \n")
    keys = Keys(make_settings(api_keys_file=keys_file))
    assert keys.enabled
    assert "s3cret" not in repr(vars(keys))
    assert keys.check("Bearer s3cret-infer", "inference") != keys.check("Bearer s3cret-admin",
                                                                        "admin")  # fmt: skip
    (tmp_path / "bad").write_text("root:whatever\n")
    with pytest.raises(ValueError, match="bad:1"):
        Keys(make_settings(api_keys_file=tmp_path / "bad"))
    assert not Keys(make_settings()).enabled  # no keys: the server is open

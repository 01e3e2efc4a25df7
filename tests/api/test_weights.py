"""Trained weights: upload, export, validation, durability, replicas, consistency, memory budget.
The repository's tests run on both kinds of repository: a local folder and a real S3 bucket
(SeaweedFS)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import save

from tests.conftest import make_settings, open_client
from tests.oracle import torch_module
from tests.support import eventually
from tests.support.helpers import b64, decode

pytestmark = pytest.mark.anyio

CONFIG = {"input_size": 4, "hidden_size": 6, "num_layers": 2, "bidirectional": True}
OCTET = {"content-type": "application/octet-stream"}


def trained(seed: int, config: dict[str, Any] = CONFIG) -> torch.nn.RNN:
    """Stands in for a model trained elsewhere: weights unlike the registered seed's."""
    torch.manual_seed(seed)
    rnn = torch.nn.RNN(config["input_size"], config["hidden_size"], config.get("num_layers", 1),
                       bidirectional=config.get("bidirectional", False))  # fmt: skip
    with torch.no_grad():
        for p in rnn.parameters():
            p.mul_(1.5).add_(0.01)
    return rnn.eval()


def local(rnn: torch.nn.RNN, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        out, hn = rnn(torch.from_numpy(x))
    return out.numpy(), hn.numpy()


X = np.random.default_rng(0).standard_normal((5, 3, 4)).astype(np.float32)


async def forward(c: httpx.AsyncClient, name: str = "m") -> httpx.Response:
    return await c.post(
        f"/v1/models/{name}/forward", json={"input": b64(X), "output_encoding": "b64"}
    )


@pytest.fixture
async def repo_client(
    repository: str, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(model_repository=repository, model_cache=tmp_path / "cache")
    async for c in open_client(settings):
        yield c


@pytest.fixture
def folder_client(repo_client: httpx.AsyncClient, repository: str) -> httpx.AsyncClient:
    """The same, for tests of a folder's own files."""
    if "://" in repository:
        pytest.skip("a test of the local folder's files")
    return repo_client


async def test_upload_then_forward_equals_local_module(
    repo_client: httpx.AsyncClient, repository: str
) -> None:
    c = repo_client
    assert (await c.post("/v1/models", json={"name": "m", "config": CONFIG})).status_code == 201
    rnn = trained(7)
    r = await c.put("/v1/models/m/weights", content=save(rnn.state_dict()), headers=OCTET)
    assert r.status_code == 200, r.text
    assert r.json()["loaded"] is True
    got = (await forward(c)).json()
    want_out, want_hn = local(rnn, X)
    np.testing.assert_allclose(decode(got["output"]), want_out, atol=1e-6)
    np.testing.assert_allclose(decode(got["h_n"]), want_hn, atol=1e-6)
    if "://" not in repository:
        folder = Path(repository) / "m"
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "weights.safetensors"]


async def test_export_round_trips_bit_for_bit(repo_client: httpx.AsyncClient) -> None:
    c = repo_client
    await c.post("/v1/models", json={"name": "m", "config": CONFIG})
    seeded = await c.get("/v1/models/m/weights")
    assert seeded.status_code == 200
    assert seeded.headers["content-type"] == "application/octet-stream"
    torch.manual_seed(0)
    ref = torch.nn.RNN(4, 6, 2, bidirectional=True).state_dict()
    from safetensors.torch import load

    exported = load(seeded.content)
    assert list(exported) == list(ref) or set(exported) == set(ref)
    for name, value in ref.items():
        assert torch.equal(exported[name], value), name

    blob = save(trained(3).state_dict())
    await c.put("/v1/models/m/weights", content=blob, headers=OCTET)
    again = (await c.get("/v1/models/m/weights")).content
    assert again == blob
    await c.post("/v1/models", json={"name": "copy", "config": CONFIG})
    assert (await c.put("/v1/models/copy/weights", content=again, headers=OCTET)).status_code == 200
    assert (await c.get("/v1/models/copy/weights")).content == blob
    assert (await forward(c, "copy")).json()["output"] == (await forward(c, "m")).json()["output"]


def _state(**changes: Any) -> dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in trained(5).state_dict().items()}
    for key, value in changes.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    return state


@pytest.mark.parametrize(
    ("blob", "loc", "fragment"),
    [
        (b"definitely not safetensors", ["body"], "expected a safetensors file"),
        (save(_state(weight_hh_l1_reverse=None)), ["body", "weight_hh_l1_reverse"], "missing tensor; expected shape [6, 6]"),
        (save(_state(extra=torch.zeros(2))), ["body", "extra"], "unexpected tensor"),
        (save(_state(bias_ih_l0=torch.zeros(7))), ["body", "bias_ih_l0"], "expected shape [6], got [7]"),
        (save(_state(bias_ih_l0=torch.zeros(6, dtype=torch.float64))), ["body", "bias_ih_l0"], "expected dtype float32, got float64"),
        (save(_state(bias_hh_l0=torch.zeros(6, dtype=torch.int32))), ["body", "bias_hh_l0"], "expected dtype float32, got int32"),
        (save(_state(weight_hh_l0=torch.full((6, 6), float("nan")))), ["body", "weight_hh_l0"], "NaN or infinity"),
    ],
)  # fmt: skip
async def test_bad_weights_are_refused_and_previous_stay(
    repo_client: httpx.AsyncClient, blob: bytes, loc: list[str], fragment: str
) -> None:
    c = repo_client
    await c.post("/v1/models", json={"name": "m", "config": CONFIG})
    good = save(trained(9).state_dict())
    await c.put("/v1/models/m/weights", content=good, headers=OCTET)
    before = (await forward(c)).json()
    r = await c.put("/v1/models/m/weights", content=blob, headers=OCTET)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    errors = {tuple(e["loc"]): e["msg"] for e in r.json()["errors"]}
    assert fragment in errors[tuple(loc)]
    assert (await forward(c)).json() == before
    assert (await c.get("/v1/models/m/weights")).content == good


async def test_upload_needs_octet_stream_and_a_known_model(repo_client: httpx.AsyncClient) -> None:
    c = repo_client
    blob = save(trained(1).state_dict())
    assert (await c.put("/v1/models/nope/weights", content=blob, headers=OCTET)).status_code == 404
    await c.post("/v1/models", json={"name": "m", "config": CONFIG})
    r = await c.put(
        "/v1/models/m/weights", content=blob, headers={"content-type": "application/json"}
    )
    assert r.status_code == 415


@pytest.mark.parametrize("name", ["..", "%2E%2E", "a%2Fb", "..%2F..%2Fetc", ".hidden", "a" * 65])
async def test_traversal_names_are_refused(
    repo_client: httpx.AsyncClient, tmp_path: Path, name: str, repository: str
) -> None:
    c = repo_client
    blob = save(trained(1).state_dict())
    for r in (
        await c.put(f"/v1/models/{name}/weights", content=blob, headers=OCTET),
        await c.get(f"/v1/models/{name}/weights"),
        await c.delete(f"/v1/models/{name}"),
    ):
        assert r.status_code in (404, 422), r.text
    outside = {p.name for p in tmp_path.iterdir()} - {"cache"}
    assert outside == ({"repo"} if "://" not in repository else set())


async def test_folder_dropped_by_hand_is_served(
    folder_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    repo_client = folder_client
    rnn = trained(11)
    folder = tmp_path / "repo" / "byhand"
    folder.mkdir()
    (folder / "config.json").write_text(
        '{"input_size": 4, "hidden_size": 6, "num_layers": 2, "bidirectional": true}'
    )
    (folder / "weights.safetensors").write_bytes(save(rnn.state_dict()))
    got = (await forward(repo_client, "byhand")).json()
    np.testing.assert_allclose(decode(got["output"]), local(rnn, X)[0], atol=1e-6)
    names = [m["name"] for m in (await repo_client.get("/v1/models")).json()["models"]]
    assert names == ["byhand", "default"]


async def test_replicas_sharing_a_repository(
    repository: str, tmp_path: Path, anyio_backend: str
) -> None:
    """Two apps on one folder or bucket: what one registers, uploads or deletes, the other serves
    or refuses (a bucket's changes reach the other within RNN_SERVE_REPOSITORY_RECHECK_S)."""

    def settings(cache: str) -> Any:
        return make_settings(model_repository=repository, model_cache=tmp_path / cache,
                             repository_recheck_s=0.1)  # fmt: skip

    async def soon(check: Any) -> httpx.Response:
        for _ in range(100):
            r: httpx.Response = await check()
            if r.status_code != 404 or not remote:
                return r
            await asyncio.sleep(0.05)
        return r

    remote = "://" in repository
    async for a in open_client(settings("a")):
        async for b in open_client(settings("b")):
            assert (await forward(b)).status_code == 404
            await a.post("/v1/models", json={"name": "m", "config": CONFIG})
            seeded = (await soon(lambda b=b: forward(b))).json()
            assert seeded == (await forward(a)).json()
            rnn = trained(21)
            await a.put("/v1/models/m/weights", content=save(rnn.state_dict()), headers=OCTET)
            for _ in range(100):
                got = (await forward(b)).json()
                if got != seeded:
                    break
                await asyncio.sleep(0.05)
            assert got != seeded
            np.testing.assert_allclose(decode(got["output"]), local(rnn, X)[0], atol=1e-6)
            assert (await a.delete("/v1/models/m")).status_code == 204
            await eventually(functools.partial(forward, b), lambda r: r.status_code == 404, 10)
            assert (await b.get("/v1/models/m")).status_code == 404


async def test_forwards_during_reupload_and_delete(repo_client: httpx.AsyncClient) -> None:
    """Every answer is wholly the old weights' or wholly the new's, or a 404 once deleted."""
    c = repo_client
    await c.post("/v1/models", json={"name": "m", "config": CONFIG})
    blobs = [save(trained(s).state_dict()) for s in (31, 32)]
    expected = []
    for blob in blobs:
        await c.put("/v1/models/m/weights", content=blob, headers=OCTET)
        expected.append((await forward(c)).json()["output"])

    async def upload(i: int) -> httpx.Response:
        return await c.put("/v1/models/m/weights", content=blobs[i % 2], headers=OCTET)

    tasks = [forward(c) if i % 4 else upload(i // 4) for i in range(40)]
    tasks.append(c.delete("/v1/models/m"))
    tasks += [forward(c) for _ in range(10)]
    answers = await asyncio.gather(*tasks)
    statuses = {r.status_code for r in answers}
    assert statuses <= {200, 204, 404}, [r.text for r in answers if r.status_code >= 500]
    candidates = [decode(e) for e in expected]
    for r in answers:
        if r.status_code == 200 and "output" in r.json():
            got = decode(r.json()["output"])  # batching may change the last float bit, not more
            assert any(np.abs(got - want).max() < 1e-6 for want in candidates)


async def test_memory_budget_evicts_and_rebuilds(
    repository: str, tmp_path: Path, anyio_backend: str
) -> None:
    one_model = 4 * sum(p.numel() for p in trained(0).parameters())
    settings = make_settings(model_repository=repository, model_cache=tmp_path / "cache",
                             max_loaded_bytes=one_model)  # fmt: skip
    async for c in open_client(settings):
        answers = {}
        for name in ("a", "b", "c"):
            await c.post("/v1/models", json={"name": name, "config": CONFIG})
            await c.put(
                f"/v1/models/{name}/weights",
                content=save(trained(ord(name)).state_dict()),
                headers=OCTET,
            )
            answers[name] = (await forward(c, name)).json()
        loaded = {m["name"]: m["loaded"] for m in (await c.get("/v1/models")).json()["models"]}
        assert loaded == {"a": False, "b": False, "c": True, "default": False}
        for name in ("a", "b", "c"):
            assert (await forward(c, name)).json() == answers[name]  # rebuilt from the repository
        metrics = (await c.get("/metrics")).text
        evictions = next(
            line
            for line in metrics.splitlines()
            if 'event="eviction"' in line and not line.startswith("#")
        )
        assert float(evictions.rsplit(" ", 1)[1]) >= 4
        assert [m["name"] for m in (await c.get("/v1/models")).json()["models"]] == [
            "a",
            "b",
            "c",
            "default",
        ]


# --- LSTM and GRU: weights under torch's state_dict names ----------------------------------------
MODE_CONFIGS = [
    {"mode": "LSTM", "input_size": 4, "hidden_size": 6, "num_layers": 2, "bidirectional": True,
     "proj_size": 3},
    {"mode": "LSTM", "input_size": 4, "hidden_size": 6, "bias": False},
    {"mode": "GRU", "input_size": 4, "hidden_size": 6, "num_layers": 2, "bidirectional": True},
]  # fmt: skip


@pytest.mark.parametrize("config", MODE_CONFIGS, ids=["lstm-proj-bidir", "lstm-nobias", "gru"])
async def test_lstm_and_gru_weights_upload_export_and_serve(
    repo_client: httpx.AsyncClient, config: dict[str, Any]
) -> None:
    c = repo_client
    assert (await c.post("/v1/models", json={"name": "m", "config": config})).status_code == 201
    module = torch_module({**config, "seed": 21})
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(1.5).add_(0.01)
    module.eval()
    blob = save(module.state_dict())
    r = await c.put("/v1/models/m/weights", content=blob, headers=OCTET)
    assert r.status_code == 200, r.text
    assert (await c.get("/v1/models/m/weights")).content == blob
    got = (await forward(c)).json()
    with torch.inference_mode():
        out, final = module(torch.from_numpy(X))
    h_n = final[0] if config["mode"] == "LSTM" else final
    np.testing.assert_allclose(decode(got["output"]), out.numpy(), atol=1e-6)
    np.testing.assert_allclose(decode(got["h_n"]), h_n.numpy(), atol=1e-6)
    if config["mode"] == "LSTM":
        np.testing.assert_allclose(decode(got["c_n"]), final[1].numpy(), atol=1e-6)
    # the same file is refused by a model of another mode, naming every misfit tensor
    other = {**config, "mode": "GRU" if config["mode"] == "LSTM" else "LSTM"}
    other.pop("proj_size", None)
    await c.post("/v1/models", json={"name": "other", "config": other})
    refused = await c.put("/v1/models/other/weights", content=blob, headers=OCTET)
    assert refused.status_code == 422, refused.text
    assert any("expected shape" in e["msg"] for e in refused.json()["errors"])


async def test_lstm_projection_weights_are_named_weight_hr(repo_client: httpx.AsyncClient) -> None:
    c = repo_client
    config = MODE_CONFIGS[0]
    await c.post("/v1/models", json={"name": "m", "config": config})
    state = {k: v.clone() for k, v in torch_module(config).state_dict().items()}
    del state["weight_hr_l1_reverse"]
    state["weight_hr_l0"] = torch.zeros(3, 5)
    r = await c.put("/v1/models/m/weights", content=save(state), headers=OCTET)
    assert r.status_code == 422, r.text
    errors = {tuple(e["loc"]): e["msg"] for e in r.json()["errors"]}
    assert errors[("body", "weight_hr_l1_reverse")] == "missing tensor; expected shape [3, 6]"
    assert errors[("body", "weight_hr_l0")] == "expected shape [3, 6], got [3, 5]"


async def test_an_unreachable_bucket_is_503_with_the_reason(
    s3_server: object, tmp_path: Path, anyio_backend: str
) -> None:
    """At start-up a store that does not answer is readiness 503 saying why (and retried); a
    model call is 503 storage-unavailable, never a 500."""
    from asgi_lifespan import LifespanManager

    from service.app import create_app
    from tests.support.server import free_port

    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = make_settings(model_repository="s3://models/nowhere", model_cache=tmp_path / "c")
    import os

    saved = os.environ["AWS_ENDPOINT_URL"]
    os.environ["AWS_ENDPOINT_URL"] = closed
    try:
        app = create_app(settings)
        async with (
            LifespanManager(app, startup_timeout=60) as manager,
            httpx.AsyncClient(transport=httpx.ASGITransport(manager.app), base_url="http://t") as c,
        ):
            ready = functools.partial(c.get, "/readyz")
            r = await eventually(ready, lambda r: "cannot be reached" in r.text, 20)
            assert r.status_code == 503, r.text
            assert "s3://models/nowhere cannot be reached" in r.json()["detail"]
            r = await c.get("/v1/models")
            assert r.status_code == 503, r.text
            assert r.json()["type"].endswith("storage-unavailable")
            assert "retry-after" in r.headers
    finally:
        os.environ["AWS_ENDPOINT_URL"] = saved


async def test_a_model_with_layers_is_stored_and_served_from_either_repository(
    repo_client: httpx.AsyncClient,
) -> None:
    """A trained embedding -> LSTM -> head, uploaded under its module's names, served after a
    restart of the cache (the module rebuilt from the stored file) in a folder and a bucket."""
    from safetensors.torch import load, save

    from tests.support.models import seeded_net

    config = {"mode": "LSTM", "input_size": 3, "hidden_size": 4,
              "embedding": {"num_embeddings": 6}, "head": {"out_features": 2, "on": "last_step"}}  # fmt: skip
    c = repo_client
    assert (await c.post("/v1/models", json={"name": "lm", "config": config})).status_code == 201
    net = seeded_net(config, ("embedding", "lstm", "fc"))
    torch.manual_seed(4)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    r = await c.put("/v1/models/lm/weights", content=save(net.state_dict()), headers=OCTET)
    assert r.status_code == 200, r.text
    assert (await c.post("/v2/repository/models/lm/unload")).status_code == 200
    got = (await c.post("/v1/models/lm/forward", json={"input": [[1, 2], [3, 5]]})).json()
    with torch.no_grad():
        _, _, y = net(torch.tensor([[1, 2], [3, 5]]))
    np.testing.assert_allclose(got["logits"], y.numpy(), atol=1e-6)
    stored = load((await c.get("/v1/models/lm/weights")).content)
    assert "embedding.weight" in stored
    assert "head.bias" in stored

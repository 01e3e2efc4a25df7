"""Helpers for building requests and reading answers."""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

import httpx
import numpy as np
import torch

from service.catalog.catalog import Catalog
from service.catalog.spec import ModelSpec
from service.core.metrics import Metrics
from service.core.schemas.config import RNNConfig
from service.core.settings import Settings
from service.engine.modules import ModuleCache
from service.engine.weights import seeded_weights


def flat(arr: np.ndarray, dtype: str = "float32") -> dict[str, Any]:
    return {"shape": list(arr.shape), "dtype": dtype, "data": arr.reshape(-1).tolist()}


def b64(arr: np.ndarray, dtype: str = "float32") -> dict[str, Any]:
    if dtype == "bfloat16":
        raw = torch.from_numpy(np.asarray(arr, np.float32)).to(torch.bfloat16)
        data = raw.view(torch.int16).numpy().tobytes()
    else:
        data = np.ascontiguousarray(arr, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    return {"shape": list(arr.shape), "dtype": dtype, "b64": base64.b64encode(data).decode()}


def decode(t: Any) -> np.ndarray:
    """Any wire form of a response tensor -> float64 array."""
    if isinstance(t, list):
        return np.asarray(t, dtype=np.float64)
    shape = t["shape"]
    if "data" in t:
        return np.asarray(t["data"], dtype=np.float64).reshape(shape)
    raw = base64.b64decode(t["b64"])
    if t["dtype"] == "bfloat16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).astype(np.float64).reshape(shape)
    return (
        np.frombuffer(raw, dtype=np.dtype(t["dtype"]).newbyteorder("<"))
        .astype(np.float64)
        .reshape(shape)
    )


TOLERANCE = {"float32": 1e-5, "float64": 1e-12, "float16": 2e-2, "bfloat16": 1e-1}


async def open_session(c: httpx.AsyncClient, model: str = "default", **body: Any) -> str:
    """Open a session (201) and return its id."""
    r = await c.post(f"/v1/models/{model}/sessions", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["session_id"])


async def chunk(c: httpx.AsyncClient, sid: str, x: np.ndarray, **body: Any) -> httpx.Response:
    """Send a session's next chunk (base64 both ways)."""
    return await c.post(
        f"/v1/sessions/{sid}/forward", json={"input": b64(x), "output_encoding": "b64", **body}
    )


class Models:
    """The catalog and the engine's module cache over it, as the engine host joins them."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.catalog = Catalog(settings, metrics)
        self.modules = ModuleCache(settings, self.catalog, torch.device("cpu"), metrics)

    def register(self, name: str, config: RNNConfig) -> ModelSpec:
        return self.catalog.register(name, config, lambda: seeded_weights(config))[0]

    def inline_module(self, config: RNNConfig) -> object:
        return self.modules.module_for(ModelSpec.of_inline(config))

    def module(self, name: str, config: RNNConfig | None = None) -> object:
        spec = self.catalog.get(name)
        return self.modules.module_for(spec if config is None else replace(spec, config=config))

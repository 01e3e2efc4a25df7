"""The native v1 API: forwards with inline or registered models, and the model registry."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Hashable
from typing import Any

import orjson
import torch
from anyio import to_thread
from fastapi import APIRouter, Request, Response

from service.api import problems
from service.api.body import may_hide_bools, parse, read_json
from service.api.deps import ModelNamePath, RegistryDep
from service.api.openapi import json_body
from service.engine.codec import Encoding, decode_tensor, encode_tensor
from service.engine.engine import Engine, ModuleSource
from service.engine.runner import ForwardResult
from service.engine.validate import H0, INPUT, validate_forward
from service.errors import InvalidInput, UnsupportedMediaType
from service.metrics import StageTimers
from service.registry import ModelEntry, Registry
from service.schemas.api import (
    MODEL_NAME_PATTERN,
    ForwardRequest,
    ForwardResponse,
    InlineForwardRequest,
    ModelInfo,
    ModelList,
    RegisterModel,
)
from service.schemas.config import RNNConfig
from service.settings import Settings

router = APIRouter(prefix="/v1", tags=["v1"])

_FORWARD_ERRORS = problems.responses(400, 413, 415, 422, 429, 503, 504, 507)
_JSON_ERRORS = problems.responses(400, 413, 415, 422)


# The two forward routes are the hot path: they take only the Request (no dependency solving or
# parameter validation by FastAPI, each a measurable share of a small request's cost) and read
# the lifespan's objects from request.state. Their parameters are declared in openapi_extra.
_NAME_PARAM = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": MODEL_NAME_PATTERN},
    "description": "A registered model's name.",
}
_NAME = re.compile(MODEL_NAME_PATTERN)


async def _forward(
    request: Request,
    body_model: type[ForwardRequest],
    resolve: Callable[[Any], tuple[str, RNNConfig, Hashable, ModuleSource]],
) -> Response:
    """Shared by both forward routes: parse -> decode -> validate -> engine -> encode."""
    state = request.state
    settings: Settings = state.settings
    engine: Engine = state.engine
    stages: StageTimers = state.metrics.stages
    started = time.perf_counter()
    obj, body = await read_json(request)
    req = parse(body_model, obj)
    name, config, key, source = resolve(req)
    known_bools = sum(type(v) is bool for v in obj.get("config", {}).values())
    check_bools = may_hide_bools(body, known_bools)
    limit = settings.max_tensor_elements
    x = decode_tensor(req.input, INPUT, config.dtype, limit, check_bools=check_bools)
    h0 = None
    if req.h0 is not None:
        h0 = decode_tensor(req.h0, H0, config.dtype, limit, check_bools=check_bools)
    job = validate_forward(config, x, h0, req.lengths)
    stages.decode.observe(time.perf_counter() - started)

    result = await engine.forward(key, source, config, job)
    request.scope["rnn_serve"] = {
        "model": name, "sequences": job.batch, "batch": result.batch_sequences
    }  # fmt: skip

    encode_started = time.perf_counter()
    content = forward_answer(name, config, result, req.output_encoding, state.registry.device)
    stages.encode.observe(time.perf_counter() - encode_started)
    return Response(content, media_type="application/json")


def forward_answer(
    name: str,
    config: RNNConfig,
    result: ForwardResult,
    encoding: Encoding,
    device: torch.device,
    **extra: Any,
) -> bytes:
    """The forward response body (also a session chunk's, with `extra` fields)."""
    payload = {
        "model": name,
        "output": encode_tensor(result.output, config.dtype, encoding),
        "h_n": encode_tensor(result.h_n, config.dtype, encoding),
        "output_shape": list(result.output.shape),
        "h_n_shape": list(result.h_n.shape),
        "dtype": config.dtype,
        "device": device.type,
        **extra,
    }
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


@router.post(
    "/rnn/forward",
    summary="Forward with an inline RNN config",
    openapi_extra=json_body(InlineForwardRequest),
    responses={200: {"model": ForwardResponse}, **_FORWARD_ERRORS},
)
async def forward_inline(request: Request) -> Response:
    registry: Registry = request.state.registry

    def resolve(req: InlineForwardRequest) -> tuple[str, RNNConfig, Hashable, ModuleSource]:
        config = req.config
        registry.check_limits(config)
        key = config.canonical_key
        return key, config, key, lambda: registry.inline_module(config)

    return await _forward(request, InlineForwardRequest, resolve)


@router.post(
    "/models/{name}/forward",
    summary="Forward with a registered model",
    openapi_extra={**json_body(ForwardRequest), "parameters": [_NAME_PARAM]},
    responses={200: {"model": ForwardResponse}, **problems.responses(404), **_FORWARD_ERRORS},
)
async def forward_model(request: Request) -> Response:
    name = request.path_params["name"]
    if not _NAME.fullmatch(name):
        raise InvalidInput.at(
            ("path", "name"), f"String should match pattern '{MODEL_NAME_PATTERN}'"
        )
    registry: Registry = request.state.registry
    entry = registry.get(name)  # a stat or two: sees deletes and uploads by other replicas

    def resolve(req: ForwardRequest) -> tuple[str, RNNConfig, Hashable, ModuleSource]:
        return (entry.name, entry.config, *registered_target(registry, entry))

    return await _forward(request, ForwardRequest, resolve)


def registered_target(registry: Registry, entry: ModelEntry) -> tuple[Hashable, ModuleSource]:
    """The batching key and module source of a registered model (shared with v2, so requests
    of both protocols for one model batch together)."""
    key = ("model", entry.name, entry.config.canonical_key)
    return key, lambda: registry.module(entry.name, entry.config)


def model_info(registry: Registry, entry: ModelEntry) -> ModelInfo:
    return ModelInfo(
        name=entry.name,
        config=entry.config,
        parameters=entry.config.parameter_count(),
        device=registry.device.type,
        dtype=entry.config.dtype,
        loaded=registry.is_loaded(entry),
        ready=True,
    )


@router.post(
    "/models",
    summary="Register a model",
    status_code=201,
    openapi_extra=json_body(RegisterModel),
    responses={
        200: {"model": ModelInfo},
        201: {"model": ModelInfo},
        **problems.responses(409),
        **_JSON_ERRORS,
    },
)
async def register_model(request: Request, response: Response, registry: RegistryDep) -> ModelInfo:
    obj, _ = await read_json(request)
    req = parse(RegisterModel, obj)
    entry, created = await to_thread.run_sync(registry.register, req.name, req.config)
    response.status_code = 201 if created else 200
    return model_info(registry, entry)


@router.get("/models", summary="List registered models")
async def list_models(registry: RegistryDep) -> ModelList:
    entries = await to_thread.run_sync(registry.list)
    return ModelList(models=[model_info(registry, e) for e in entries])


@router.get(
    "/models/{name}",
    summary="A model's metadata",
    responses=problems.responses(404, 422),
)
async def get_model(name: ModelNamePath, registry: RegistryDep) -> ModelInfo:
    return model_info(registry, await to_thread.run_sync(registry.get, name))


@router.delete(
    "/models/{name}",
    summary="Delete a model",
    status_code=204,
    response_class=Response,
    responses=problems.responses(404, 422),
)
async def delete_model(name: ModelNamePath, request: Request, registry: RegistryDep) -> Response:
    await to_thread.run_sync(registry.delete, name)
    request.state.sessions.end_model(name)
    return Response(status_code=204)


_SAFETENSORS = "application/octet-stream"


@router.put(
    "/models/{name}/weights",
    summary="Upload trained weights (a safetensors file of nn.RNN's state_dict())",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {_SAFETENSORS: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
    responses={200: {"model": ModelInfo}, **problems.responses(404, 413, 415, 422)},
)
async def upload_weights(name: ModelNamePath, request: Request, registry: RegistryDep) -> ModelInfo:
    media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if media != _SAFETENSORS:
        raise UnsupportedMediaType(
            f"expected Content-Type {_SAFETENSORS} (a safetensors file), got {media or 'none'}"
        )
    data = await request.body()
    entry = await to_thread.run_sync(registry.upload, name, data)
    return model_info(registry, entry)


@router.get(
    "/models/{name}/weights",
    summary="Download the current weights as a safetensors file",
    response_class=Response,
    responses={
        200: {"content": {_SAFETENSORS: {"schema": {"type": "string", "format": "binary"}}}},
        **problems.responses(404, 422, 503),
    },
)
async def export_weights(name: ModelNamePath, registry: RegistryDep) -> Response:
    data = await to_thread.run_sync(registry.export, name)
    return Response(
        data,
        media_type=_SAFETENSORS,
        headers={"Content-Disposition": f'attachment; filename="{name}.safetensors"'},
    )

"""The native v1 API: forwards with inline or registered models, and the model repository.

The forward routes are thin adapters over the data plane (service.dataplane.plane): read the body,
hand it to the v1 codec and the data plane, write the answer.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request, Response

from service.catalog.spec import ModelSpec
from service.catalog.statedict import parse_prefixes
from service.codecs.envelope import loads, parse
from service.codecs.pipeline import Encoded
from service.codecs.v1 import V1Forward
from service.core.errors import UnsupportedMediaType
from service.core.schemas.api import (
    ForwardRequest,
    ForwardResponse,
    InlineForwardRequest,
    ModelInfo,
    ModelList,
    RegisterModel,
)
from service.dataplane.keys import ADMIN, INFERENCE
from service.dataplane.plane import DataPlane
from service.http import problems, routing
from service.http.auth import requires
from service.http.body import json_body, lean_json_body
from service.http.deps import ModelNamePath, PlaneDep
from service.http.openapi import NAME_PARAM, json_body_schema
from service.http.routing import LeanRequest, LeanRoute

router = routing.router("/v1", "v1")
forwards = routing.router("/v1", "v1", LeanRoute)

_FORWARD_ERRORS = problems.responses(400, 413, 415, 422, 429, 503, 504, 507)
_JSON_ERRORS = problems.responses(400, 413, 415, 422)


@forwards.post(
    "/rnn/forward",
    summary="Forward with an inline config",
    openapi_extra={**json_body_schema(InlineForwardRequest), **requires(ADMIN)},
    responses={200: {"model": ForwardResponse}, **_FORWARD_ERRORS},
)
async def forward_inline(request: LeanRequest) -> Encoded:
    codec = V1Forward(lean_json_body(request), InlineForwardRequest)
    config = codec.inline_config()
    return await request.plane.infer(request.context, codec, config)


@forwards.post(
    "/models/{name}/forward",
    summary="Forward with a registered model",
    openapi_extra={**json_body_schema(ForwardRequest), **NAME_PARAM, **requires(INFERENCE)},
    responses={200: {"model": ForwardResponse}, **problems.responses(404), **_FORWARD_ERRORS},
)
async def forward_model(request: LeanRequest) -> Encoded:
    codec = V1Forward(lean_json_body(request), ForwardRequest)
    name = request.path_params["name"]
    return await request.plane.infer(request.context, codec, name)


async def model_info(plane: DataPlane, spec: ModelSpec, loaded: bool | None = None) -> ModelInfo:
    if loaded is None:
        loaded = await plane.repository.is_loaded(spec)
    return ModelInfo(
        name=spec.name,
        config=spec.config,
        parameters=spec.config.parameter_count(),
        device=plane.device,
        dtype=spec.config.dtype,
        loaded=loaded,
        ready=True,
    )


@router.post(
    "/models",
    summary="Register a model",
    status_code=201,
    openapi_extra={**json_body_schema(RegisterModel), **requires(ADMIN)},
    responses={
        200: {"model": ModelInfo},
        201: {"model": ModelInfo},
        **problems.responses(409),
        **_JSON_ERRORS,
    },
)
async def register_model(request: Request, response: Response, plane: PlaneDep) -> ModelInfo:
    req = parse(RegisterModel, loads(await json_body(request)))
    spec, created = await plane.repository.register(req.name, req.config)
    response.status_code = 201 if created else 200
    return await model_info(plane, spec)


@router.get("/models", summary="List registered models", openapi_extra=requires(INFERENCE))
async def list_models(plane: PlaneDep) -> ModelList:
    index = await plane.repository.index()
    return ModelList(models=[await model_info(plane, s, loaded) for s, loaded in index])


@router.get(
    "/models/{name}",
    summary="A model's metadata",
    openapi_extra=requires(INFERENCE),
    responses=problems.responses(404, 422),
)
async def get_model(name: ModelNamePath, plane: PlaneDep) -> ModelInfo:
    return await model_info(plane, await plane.repository.model(name))


@router.delete(
    "/models/{name}",
    summary="Delete a model",
    openapi_extra=requires(ADMIN),
    status_code=204,
    response_class=Response,
    responses=problems.responses(404, 422),
)
async def delete_model(name: ModelNamePath, plane: PlaneDep) -> Response:
    await plane.repository.delete(name)
    return Response(status_code=204)


_SAFETENSORS = "application/octet-stream"


@router.put(
    "/models/{name}/weights",
    summary="Upload trained weights (a safetensors file of the module's state_dict())",
    description="The tensors' names are a trained module's: a core alone (nn.RNN's own names, "
    "or under one prefix such as `lstm.`), or with its embedding and head under the prefixes "
    "the module gave them (`embedding.`, `lstm.`, `fc.`). `prefixes` names them where the "
    "names do not say: `embedding=tok,core=lstm,head=out`.",
    openapi_extra={
        **requires(ADMIN),
        "requestBody": {
            "required": True,
            "content": {_SAFETENSORS: {"schema": {"type": "string", "format": "binary"}}},
        },
    },
    responses={200: {"model": ModelInfo}, **problems.responses(404, 413, 415, 422)},
)
async def upload_weights(
    name: ModelNamePath,
    request: Request,
    plane: PlaneDep,
    prefixes: Annotated[
        str | None,
        Query(
            description="layer=prefix pairs for names the model's layers cannot be told by: "
            "embedding, core and head (an empty prefix: tensors with none)",
            examples=["embedding=tok,core=lstm,head=out"],
            max_length=512,
        ),
    ] = None,
) -> ModelInfo:
    media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if media != _SAFETENSORS:
        raise UnsupportedMediaType(
            f"expected Content-Type {_SAFETENSORS} (a safetensors file), got {media or 'none'}"
        )
    data = await request.body()
    mapping = parse_prefixes(prefixes)
    return await model_info(plane, await plane.repository.upload(name, data, mapping))


@router.get(
    "/models/{name}/weights",
    summary="Download the current weights as a safetensors file",
    openapi_extra=requires(ADMIN),
    response_class=Response,
    responses={
        200: {"content": {_SAFETENSORS: {"schema": {"type": "string", "format": "binary"}}}},
        **problems.responses(404, 422, 503),
    },
)
async def export_weights(name: ModelNamePath, plane: PlaneDep) -> Response:
    data = await plane.repository.export(name)
    return Response(
        data,
        media_type=_SAFETENSORS,
        headers={"Content-Disposition": f'attachment; filename="{name}.safetensors"'},
    )

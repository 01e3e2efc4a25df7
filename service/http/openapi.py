"""The OpenAPI document: request bodies are read raw (orjson), so their schemas are added here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service.core.schemas.api import (
    MODEL_NAME_PATTERN,
    ForwardRequest,
    InlineForwardRequest,
    OpenSession,
    Problem,
    RegisterModel,
    SessionChunk,
)
from service.core.schemas.oip import ErrorBody, InferRequest
from service.http.auth import SECURITY_SCHEME

_REF = "#/components/schemas/{model}"
COMPONENT_MODELS: tuple[type[BaseModel], ...] = (
    InlineForwardRequest,
    ForwardRequest,
    RegisterModel,
    Problem,
    InferRequest,
    ErrorBody,
    OpenSession,
    SessionChunk,
)


# The path parameter of routes that read their model name themselves (lean routes).
NAME_PARAM: dict[str, Any] = {
    "parameters": [
        {
            "name": "name",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": MODEL_NAME_PATTERN},
            "description": "A registered model's name.",
        }
    ]
}


def json_body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` declaring a JSON request body of `model`."""
    ref = {"$ref": _REF.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


_PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
_OIP_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
_REFUSALS = {
    401: "No valid API key (with WWW-Authenticate)",
    403: "The key lacks the scope, or the server forbids this",
}
_STORAGE = {
    503: "The model repository cannot be written; nothing was changed",
    507: "The model repository's disk or quota is full; nothing was changed",
}


def _document_refusals(schema: dict[str, Any]) -> None:
    """Every operation that needs a key may answer 401 and 403; every one that writes the
    repository, 503 and 507 — in its protocol's error form."""
    for path, operations in schema.get("paths", {}).items():
        content = _OIP_ERROR if path.startswith("/v2") else _PROBLEM
        for method, operation in operations.items():
            extra: dict[int, str] = {}
            if operation.get("security"):
                extra |= _REFUSALS
            if method in ("post", "put", "delete") and path.startswith("/v1/models"):
                extra |= _STORAGE
            responses = operation.setdefault("responses", {})
            for status, description in extra.items():
                responses.setdefault(str(status), {"description": description, "content": content})
            if "504" in responses:  # a forward: it takes the client's own deadline
                operation.setdefault("parameters", []).append(TIMEOUT_HEADER)


TIMEOUT_HEADER: dict[str, Any] = {
    "name": "X-Request-Timeout",
    "in": "header",
    "required": False,
    "schema": {"type": "number", "exclusiveMinimum": 0},
    "description": "This forward's deadline in seconds, queueing and compute together (the "
    "server's RNN_SERVE_REQUEST_TIMEOUT_S caps it). Past it the answer is 504 and the "
    "forward's remaining time slices do not run.",
}


def openapi_factory(app: FastAPI) -> Callable[[], dict[str, Any]]:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                separate_input_output_schemas=False,
            )
            _, defs = models_json_schema(
                [(m, "validation") for m in COMPONENT_MODELS], ref_template=_REF
            )
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {}).update(defs.get("$defs", {}))
            components["securitySchemes"] = SECURITY_SCHEME
            _document_refusals(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi

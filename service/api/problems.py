"""The one table from domain errors to HTTP statuses, and problem+json (RFC 9457) responses.

No stack trace, exception text of an unexpected error, or internal path ever reaches a body.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from service import errors as e
from service.api.body import field_errors

log = logging.getLogger("rnn_serve.errors")

MEDIA_TYPE = "application/problem+json"

#: domain error -> (HTTP status, problem type slug)
PROBLEMS: dict[type[e.ServiceError], tuple[int, str]] = {
    e.MalformedBody: (400, "malformed-body"),
    e.ModelNotFound: (404, "model-not-found"),
    e.SessionNotFound: (404, "session-not-found"),
    e.ModelConflict: (409, "model-conflict"),
    e.PayloadTooLarge: (413, "payload-too-large"),
    e.UnsupportedMediaType: (415, "unsupported-media-type"),
    e.InvalidInput: (422, "invalid-input"),
    e.Overloaded: (429, "overloaded"),
    e.NotReady: (503, "not-ready"),
    e.DeadlineExceeded: (504, "deadline-exceeded"),
    e.DeviceOutOfMemory: (507, "device-out-of-memory"),
}


def problem_body(status: int, slug: str, detail: str, errors: Iterable[e.FieldError] = ()) -> bytes:
    return orjson.dumps(
        {
            "type": f"urn:rnn-serve:problem:{slug}",
            "title": HTTPStatus(status).phrase,
            "status": status,
            "detail": detail,
            "errors": [{"loc": list(err.loc), "msg": err.msg} for err in errors],
        }
    )


def problem_response(
    status: int,
    slug: str,
    detail: str,
    errors: Iterable[e.FieldError] = (),
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(
        problem_body(status, slug, detail, errors),
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


def status_of(exc: e.ServiceError) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in PROBLEMS:
            return PROBLEMS[cls]
    return 500, "internal"


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, e.ServiceError)
    return service_error_response(exc)


def service_error_response(exc: e.ServiceError) -> Response:
    status, slug = status_of(exc)
    headers = None
    if isinstance(exc, e.Overloaded | e.NotReady):
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))}
    return problem_response(status, slug, exc.detail, exc.errors, headers)


async def _request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errs = field_errors(exc.errors(), ())
    detail = "; ".join(f"{'.'.join(map(str, x.loc))}: {x.msg}" for x in errs)
    return problem_response(422, "invalid-input", detail, errs)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    slug = "not-found" if status == 404 else HTTPStatus(status).phrase.lower().replace(" ", "-")
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
    if status == 404:
        detail = f"no route {request.method} {request.url.path}"
    return problem_response(status, slug, detail, headers=getattr(exc, "headers", None))


async def _client_gone(request: Request, exc: Exception) -> Response:
    # The client disconnected while sending its body: not an error of ours, and nobody listens.
    return problem_response(400, "client-disconnected", "the client disconnected")


async def _unexpected(request: Request, exc: Exception) -> Response:
    request_id = request.scope.get("request_id", "-")
    log.exception(
        "unhandled error on %s %s (request id %s)", request.method, request.url.path, request_id
    )
    return problem_response(
        500, "internal", "internal server error; the server log has the details"
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(e.ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the problem statuses a route can answer."""
    schema = {"$ref": "#/components/schemas/Problem"}
    return {
        s: {"description": HTTPStatus(s).phrase, "content": {MEDIA_TYPE: {"schema": schema}}}
        for s in statuses
    }

"""Errors mapped in one place: the table from domain errors to HTTP statuses, and the two forms
an answer takes — problem+json (RFC 9457) for v1, `{"error": ...}` for the Open Inference Protocol.

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

from service.codecs.envelope import invalid
from service.codecs.pipeline import Encoded
from service.core import errors as e
from service.http.answer import Answer
from service.http.answer import status_of as answer_status

log = logging.getLogger("rnn_serve.errors")

MEDIA_TYPE = "application/problem+json"
CLIENT_CLOSED = 499  # nginx's "client closed request": the client left before its answer

#: domain error -> (HTTP status, problem type slug); the most specific class wins
PROBLEMS: dict[type[e.ServiceError], tuple[int, str]] = {
    e.MalformedBody: (400, "malformed-body"),
    e.Unauthorized: (401, "unauthorized"),
    e.Forbidden: (403, "forbidden"),
    e.ModelNotFound: (404, "model-not-found"),
    e.SessionNotFound: (404, "session-not-found"),
    e.SessionLost: (410, "session-lost"),
    e.ModelConflict: (409, "model-conflict"),
    e.StepConflict: (409, "step-conflict"),
    e.StateMismatch: (409, "state-mismatch"),
    e.PayloadTooLarge: (413, "payload-too-large"),
    e.UnsupportedMediaType: (415, "unsupported-media-type"),
    e.InvalidInput: (422, "invalid-input"),
    e.Overloaded: (429, "overloaded"),
    e.ClientDisconnected: (CLIENT_CLOSED, "client-closed-request"),
    e.NotReady: (503, "not-ready"),
    e.ShuttingDown: (503, "shutting-down"),
    e.DeadlineExceeded: (504, "deadline-exceeded"),
    e.DeviceOutOfMemory: (507, "device-out-of-memory"),
    e.StorageFull: (507, "storage-full"),
    e.StorageUnavailable: (503, "storage-unavailable"),
    e.SessionStoreUnavailable: (503, "session-store-unavailable"),
}
# The Open Inference Protocol answers every client error with 400; the rest keep their status.
_OIP_CLIENT_ERRORS = {400, 415, 422}


def phrase(status: int) -> str:
    return "Client Closed Request" if status == CLIENT_CLOSED else HTTPStatus(status).phrase


def status_of(exc: e.ServiceError) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in PROBLEMS:
            return PROBLEMS[cls]
    return 500, "internal"


def _headers(exc: e.ServiceError) -> dict[str, str] | None:
    if isinstance(exc, e.Unauthorized):
        return {"WWW-Authenticate": exc.www_authenticate}
    retry_after = getattr(exc, "retry_after", None)
    return {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None


def problem_body(
    status: int,
    slug: str,
    detail: str,
    errors: Iterable[e.FieldError] = (),
    extensions: dict[str, int | str] | None = None,
) -> bytes:
    return orjson.dumps(
        {
            "type": f"urn:rnn-serve:problem:{slug}",
            "title": phrase(status),
            "status": status,
            "detail": detail,
            "errors": [{"loc": list(err.loc), "msg": err.msg} for err in errors],
            **(extensions or {}),
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


def problem_answer(exc: e.ServiceError) -> Answer:
    """A domain error as problem+json (the v1 API)."""
    status, slug = status_of(exc)
    body = problem_body(status, slug, exc.detail, exc.errors, exc.extensions)
    return Answer(body, MEDIA_TYPE, _headers(exc) or {}, status)


def oip_error_answer(exc: e.ServiceError) -> Answer:
    """A domain error as the Open Inference Protocol's `{"error": "..."}`."""
    status, _ = status_of(exc)
    status = 400 if status in _OIP_CLIENT_ERRORS else status
    body = orjson.dumps({"error": e.described(exc), **exc.extensions})
    return Answer(body, "application/json", _headers(exc) or {}, status)


def response_of(answer: Encoded) -> Response:
    return Response(answer.body, answer_status(answer), answer.headers, answer.media_type)


def service_error_response(exc: e.ServiceError) -> Response:
    """A domain error as a problem+json response (FastAPI's exception handlers)."""
    return response_of(problem_answer(exc))


# --- FastAPI's exception handlers (the management routes) -----------------------------------------
async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, e.ServiceError)
    return service_error_response(exc)


async def _request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return service_error_response(invalid(exc.errors(), ()))


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
    return service_error_response(e.ClientDisconnected("the client disconnected"))


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

"""Every domain error with its answer on each protocol: one list, read by the HTTP table's test
and the gRPC table's, so the two tables cannot drift apart."""

from __future__ import annotations

import grpc

from service.core import errors as e

Code = grpc.StatusCode
#: (error, HTTP status, problem type slug, gRPC status)
ERRORS: list[tuple[e.ServiceError, int, str, grpc.StatusCode]] = [
    (e.MalformedBody("not JSON"), 400, "malformed-body", Code.INVALID_ARGUMENT),
    (e.Unauthorized("no key"), 401, "unauthorized", Code.UNAUTHENTICATED),
    (e.Forbidden("admin only"), 403, "forbidden", Code.PERMISSION_DENIED),
    (e.ModelNotFound("no model"), 404, "model-not-found", Code.NOT_FOUND),
    (e.SessionNotFound("no session"), 404, "session-not-found", Code.NOT_FOUND),
    (e.SessionLost("lost"), 410, "session-lost", Code.FAILED_PRECONDITION),
    (e.ModelConflict("changed"), 409, "model-conflict", Code.ABORTED),
    (e.StepConflict("step 3", 3), 409, "step-conflict", Code.ABORTED),
    (e.StateMismatch("other model"), 409, "state-mismatch", Code.FAILED_PRECONDITION),
    (e.PayloadTooLarge("big"), 413, "payload-too-large", Code.RESOURCE_EXHAUSTED),
    (e.UnsupportedMediaType("xml"), 415, "unsupported-media-type", Code.INVALID_ARGUMENT),
    (e.InvalidInput.at(("body", "input"), "bad"), 422, "invalid-input", Code.INVALID_ARGUMENT),
    (e.Overloaded("queue full"), 429, "overloaded", Code.UNAVAILABLE),
    (e.ClientDisconnected("gone"), 499, "client-closed-request", Code.CANCELLED),
    (e.NotReady("warming"), 503, "not-ready", Code.UNAVAILABLE),
    (e.ShuttingDown("draining"), 503, "shutting-down", Code.UNAVAILABLE),
    (e.DeadlineExceeded("late"), 504, "deadline-exceeded", Code.DEADLINE_EXCEEDED),
    (e.DeviceOutOfMemory("oom"), 507, "device-out-of-memory", Code.RESOURCE_EXHAUSTED),
    (e.StorageFull("full"), 507, "storage-full", Code.RESOURCE_EXHAUSTED),
    (e.StorageUnavailable("down"), 503, "storage-unavailable", Code.UNAVAILABLE),
    (e.SessionStoreUnavailable("down"), 503, "session-store-unavailable", Code.UNAVAILABLE),
]


def every_error_class() -> set[type[e.ServiceError]]:
    """Every ServiceError class service.core.errors defines (the base excepted)."""
    found: set[type[e.ServiceError]] = set()
    todo = [e.ServiceError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__ == e.__name__:
                found.add(sub)
                todo.append(sub)
    return found

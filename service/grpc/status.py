"""Domain errors as gRPC statuses, in one table (the HTTP twin is `service.http.problems`)."""

from __future__ import annotations

import grpc

from service.core import errors as e

#: domain error -> gRPC status; the most specific class wins (docs/grpc.md has the table)
STATUSES: dict[type[e.ServiceError], grpc.StatusCode] = {
    e.MalformedBody: grpc.StatusCode.INVALID_ARGUMENT,
    e.Unauthorized: grpc.StatusCode.UNAUTHENTICATED,
    e.Forbidden: grpc.StatusCode.PERMISSION_DENIED,
    e.ModelNotFound: grpc.StatusCode.NOT_FOUND,
    e.SessionNotFound: grpc.StatusCode.NOT_FOUND,
    e.SessionLost: grpc.StatusCode.FAILED_PRECONDITION,  # its state is gone: start it again
    e.ModelConflict: grpc.StatusCode.ABORTED,  # changed concurrently: read again, then retry
    e.StepConflict: grpc.StatusCode.ABORTED,  # start_step is not the session's step
    e.StateMismatch: grpc.StatusCode.FAILED_PRECONDITION,  # the state is not this model's
    e.PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.UnsupportedMediaType: grpc.StatusCode.INVALID_ARGUMENT,
    e.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    e.Overloaded: grpc.StatusCode.UNAVAILABLE,  # retry later, as HTTP's 429 Retry-After says
    e.ClientDisconnected: grpc.StatusCode.CANCELLED,
    e.NotReady: grpc.StatusCode.UNAVAILABLE,
    e.ShuttingDown: grpc.StatusCode.UNAVAILABLE,
    e.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    e.DeviceOutOfMemory: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.StorageFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.StorageUnavailable: grpc.StatusCode.UNAVAILABLE,
    e.SessionStoreUnavailable: grpc.StatusCode.UNAVAILABLE,
}


def status_of(exc: e.ServiceError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in STATUSES:
            return STATUSES[cls]
    return grpc.StatusCode.INTERNAL

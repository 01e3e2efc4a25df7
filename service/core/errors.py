"""Domain errors. No HTTP here: `service.http.problems` maps each class to a status, in one
table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of a request: where, and what was expected vs. got."""

    loc: Loc
    msg: str


class ServiceError(Exception):
    """Base of every error that is the client's or the load's fault, never a bug."""

    #: members added to the problem body (RFC 9457 extensions), e.g. a session's current step
    extensions: dict[str, int | str] = {}

    def __init__(self, detail: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = tuple(errors)


class MalformedBody(ServiceError):
    """The body is not parseable (e.g. not JSON)."""


class UnsupportedMediaType(ServiceError):
    """The body's content type is not one this endpoint takes."""


class PayloadTooLarge(ServiceError):
    """A body or a tensor is over a configured limit."""


class InvalidInput(ServiceError):
    """A config, tensor, shape or dtype is invalid; `errors` name the fields."""

    @classmethod
    def at(cls, loc: Loc, msg: str) -> InvalidInput:
        return cls(msg, [FieldError(loc, msg)])


class ModelNotFound(ServiceError):
    """No model is registered under this name."""


class SessionNotFound(ServiceError):
    """No open session with this id (never opened, closed, expired or ended)."""


def session_not_found(session_id: str) -> SessionNotFound:
    """The one answer for a session id that names no open session (of this caller's)."""
    return SessionNotFound(
        f"no open session {session_id!r} (unknown, closed, expired or ended for room)"
    )


def model_deleted(session_id: str, model: str) -> SessionNotFound:
    """The one answer for a session whose model was deleted: it ended with its model."""
    return SessionNotFound(f"session {session_id!r} ended: its model {model!r} was deleted")


class SessionLost(ServiceError):
    """The session was held in the memory of a process that has restarted since (410). It is
    never restarted from zero: the client resumes from a state it exported."""


class ModelConflict(ServiceError):
    """The name is taken by a model with another config."""


class StepConflict(ModelConflict):
    """A session chunk expected to start at another step than the session is at (a gap, a stale
    retry): the answer carries `current_step`, so the client knows where the stream stands."""

    def __init__(self, detail: str, current_step: int) -> None:
        super().__init__(detail)
        self.extensions = {"current_step": current_step}


class StateMismatch(ModelConflict):
    """A session state made under other weights (or another model) than the ones served."""


class Overloaded(ServiceError):
    """The queue is full; try again after `retry_after` seconds."""

    def __init__(self, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class NotReady(ServiceError):
    """The service is starting or draining."""

    def __init__(self, detail: str, retry_after: float = 1.0) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class ShuttingDown(NotReady):
    """The server stopped before the request ran; another replica can take it."""


class ClientDisconnected(ServiceError):
    """The client went away before its answer was ready (logged as the client's, 499)."""


class DeadlineExceeded(ServiceError):
    """The request's deadline passed before it ran."""


class DeviceOutOfMemory(ServiceError):
    """The device ran out of memory for this request; the service stays up."""


class Forbidden(ServiceError):
    """The server's configuration forbids this (e.g. inline configs turned off)."""


class StorageFull(ServiceError):
    """The model repository's disk or quota is full; nothing was changed."""


class StorageUnavailable(NotReady):
    """The model repository cannot be written (read-only, or an I/O error); nothing changed."""


class SessionStoreUnavailable(NotReady):
    """The session store (Redis) does not answer: the chunk did not run, or its state was not
    committed (503, Retry-After)."""


class Unauthorized(ServiceError):
    """No valid API key was presented (401, with WWW-Authenticate)."""

    www_authenticate = 'Bearer realm="rnn-serve"'


def described(exc: ServiceError) -> str:
    """The error as one line for protocols with no field list (OIP's `{"error"}`, a gRPC status
    message): with one field at fault, the message names it, as problem+json's `loc` does."""
    detail = exc.detail
    if len(exc.errors) == 1:
        error = exc.errors[0]
        if error.msg not in detail:
            detail = f"{detail}: {error.msg}"
        field = ".".join(str(part) for part in error.loc if part != "body")
        if field and not detail.startswith(field):
            detail = f"{field}: {detail}"
    return detail

"""The typed errors a call raises, from the server's status and problem detail."""

from __future__ import annotations

from typing import Any

import httpx


class RNNServeError(Exception):
    """An error answer. `status` is the HTTP status; `detail` the server's words; `body` all."""

    def __init__(self, status: int, detail: str, body: Any = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail, self.body = status, detail, body


class BadRequest(RNNServeError):
    """400, 413, 415 or 422: the request is invalid; `body["errors"]` names the fields (v1)."""


class Unauthorized(RNNServeError):
    """401 or 403: no valid API key, or one without the scope this call needs."""


class NotFound(RNNServeError):
    """404: no such model."""


class Conflict(RNNServeError):
    """409: the name is taken by another config."""


class StepConflict(Conflict):
    """409 from a session: the chunk expected another step; `current_step` is the session's."""

    @property
    def current_step(self) -> int | None:
        return self.body.get("current_step") if isinstance(self.body, dict) else None


class SessionLost(RNNServeError):
    """410: the session was held in the memory of a server that has restarted since.
    Resume with `open_session(model, state=...)` from a state you exported."""


class Overloaded(RNNServeError):
    """429 or 503 still after the retries."""


class ServerError(RNNServeError):
    """5xx other than 503."""


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body = response.json()
        detail = body.get("detail") or body.get("error") or response.text
    except ValueError:
        body, detail = None, response.text
    status = response.status_code
    cls: type[RNNServeError] = ServerError
    if status in (400, 413, 415, 422):
        cls = BadRequest
    elif status in (401, 403):
        cls = Unauthorized
    elif status == 404:
        cls = NotFound
    elif status == 409:
        cls = StepConflict if isinstance(body, dict) and "current_step" in body else Conflict
    elif status == 410:
        cls = SessionLost
    elif status in (429, 503):
        cls = Overloaded
    elif status < 500:
        cls = RNNServeError
    raise cls(status, str(detail), body)

"""The request context: what a front end decides about a request before the data plane runs it.

One small frozen value per request, made by a front end (the HTTP edge today, the gRPC servicer
next) and taken by the data plane: the request's id, who is calling (the API key's id and
scope), the caller's own deadline, the access log's fields and the request's trace span. What
goes into it is decided here, protocol-neutrally, so that no front end re-implements how an id is
taken or made, how a deadline is read, or how a caller is named (the keys themselves are
`service.dataplane.keys`'). Compare KServe's `InferRequest` carrying its headers, or the ASGI
scope.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from service.core.errors import InvalidInput, Loc

LogFields = MutableMapping[str, Any]
_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestIds:
    """Request ids without uuid4: a random per-process prefix (64 bits) and a counter, 32 hex
    characters in all — unique across replicas and restarts, at the cost of one increment."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._next = itertools.count().__next__

    def new(self) -> str:
        return f"{self._prefix}{self._next():016x}"

    def take(self, offered: str | None) -> str:
        """The caller's id if it is 1-128 safe characters (a trace across services), else a
        new one."""
        if offered is not None and _ID.fullmatch(offered):
            return offered
        return self.new()


def parse_timeout(value: str | None, loc: Loc) -> float | None:
    """A caller's deadline in seconds (a positive number), from a header or metadata value;
    None without one. The data plane caps it by RNN_SERVE_REQUEST_TIMEOUT_S."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise InvalidInput.at(
            loc, f"{loc[-1]}: expected a positive number of seconds, got {value[:40]!r}"
        )
    return seconds


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the API key's id (a digest prefix; it owns the sessions it opens) and
    scope, or neither when the server has no keys."""

    key_id: str | None = None
    scope: str | None = None


ANONYMOUS = Caller()


@dataclass(frozen=True, slots=True)
class RequestContext:
    """A request as the data plane sees it, whatever protocol it came by."""

    request_id: str
    protocol: str  # "http" (v1 and OIP over HTTP); a gRPC front end says "grpc"
    caller: Caller = ANONYMOUS
    timeout_s: float | None = None  # the caller's own deadline, if it gave one
    log: LogFields = field(default_factory=dict)  # the access log line's fields (model, batch)
    span: Any = None  # the request's trace span, when tracing is on
    # when the request's first bytes had been read (perf_counter), if the front end knows:
    # lookups may share a repository check made since (`Catalog.get`)
    arrived: float | None = None

    @property
    def owner(self) -> str | None:
        """Whose sessions these are: ids are per key."""
        return self.caller.key_id

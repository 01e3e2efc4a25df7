"""API keys over HTTP: the scope each route needs, declared as its OpenAPI security requirement.

The keys and their check are the data plane's (`service.dataplane.keys`), shared by every front
end. A route declares the scope it needs as its OpenAPI security requirement (`requires`), so the
document clients read and the check the edge makes come from the same place. Health, readiness,
metrics and the OpenAPI document declare none and stay open (metrics can require `admin`:
`RNN_SERVE_PROTECT_METRICS`).
"""

from __future__ import annotations

from typing import Any

from starlette.types import Scope

from service.core.errors import Unauthorized
from service.dataplane.keys import INFERENCE

SCHEME = "apiKey"  # the OpenAPI security scheme's name


def requires(scope: str) -> dict[str, Any]:
    """`openapi_extra` declaring that a route needs a key of `scope` (admin keys also have the
    inference scope)."""
    return {"security": [{SCHEME: [scope]}]}


SECURITY_SCHEME = {
    SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: `Authorization: Bearer <key>`. Scopes: inference, admin "
        "(admin keys may do what inference keys may).",
    }
}


def required_scope(openapi_extra: dict[str, Any] | None) -> str | None:
    for requirement in (openapi_extra or {}).get("security", []):
        for scopes in requirement.values():
            return str(scopes[0]) if scopes else INFERENCE
    return None


def authorization(scope: Scope) -> str | None:
    """The request's one Authorization header; 401 for several (which one would decide?)."""
    found = [value for key, value in scope["headers"] if key == b"authorization"]
    if len(found) > 1:
        raise Unauthorized(f"send one Authorization header, not {len(found)}")
    return found[0].decode("latin-1") if found else None

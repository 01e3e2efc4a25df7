"""Which route a request is for, asked of the routing table itself (each route's own `matches`,
in the table's order, as the router would), and the API-key scope that route needs; the answer
for a (method, path) is remembered (the table does not change once the app runs; the most recent
`cache_size` paths are kept)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from service.dataplane.keys import ADMIN, Keys
from service.http.auth import required_scope
from service.http.routing import LeanRoute


class RouteMatch:
    """What the routing table says of a (method, path)."""

    __slots__ = ("lean", "path_params", "route", "scope")

    def __init__(self, route: Any, path_params: dict[str, Any], scope: str | None) -> None:
        self.route = route
        self.path_params = path_params
        self.scope = scope  # the API-key scope it needs, if any
        self.lean = isinstance(route, LeanRoute)


NO_MATCH = RouteMatch(None, {}, None)


class Matcher:
    """The route of a request and the scope it needs, remembered by (method, path)."""

    def __init__(
        self, routes: Sequence[BaseRoute], keys: Keys | None, cache_size: int = 4096
    ) -> None:
        self.routes, self.keys, self._cache_size = routes, keys, cache_size
        self._matched: OrderedDict[tuple[str, str], RouteMatch] = OrderedDict()

    def __call__(self, scope: Scope) -> RouteMatch:
        """The route the router would run (the first full match), remembered by path."""
        key = (scope["method"], scope["path"])
        found = self._matched.get(key)
        if found is not None:
            return found
        found = NO_MATCH
        for route in self.routes:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                found = RouteMatch(route, child_scope.get("path_params", {}), self.scope_of(route))
                break
        self._matched[key] = found
        if len(self._matched) > self._cache_size:
            self._matched.popitem(last=False)
        return found

    def scope_of(self, route: Any) -> str | None:
        """The API-key scope a route needs (its OpenAPI security requirement)."""
        if self.keys is not None and self.keys.protect_metrics and route.path == "/metrics":
            return ADMIN
        return required_scope(getattr(route, "openapi_extra", None))

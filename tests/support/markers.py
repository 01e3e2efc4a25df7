"""Which server processes a test starts, told from the fixtures it takes and its parameters:
conftest marks it so (`make test-fast` deselects those marks)."""

from __future__ import annotations

from collections.abc import Mapping


def starts(fixtures: set[str], params: Mapping[str, object]) -> set[str]:
    """The marks of a test that takes `fixtures` with `params` (its parametrization)."""
    marks = set()
    if "redis_server" in fixtures:
        marks.add("redis")
    on_s3 = params.get("repository") == "s3"  # the `repository` fixture's bucket case
    if fixtures & {"s3_server", "live_server_s3"} or on_s3:
        marks.add("s3")
    if fixtures & {"live_server", "live_server_s3"}:
        marks.add("e2e")
    return marks

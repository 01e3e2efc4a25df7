"""Schemathesis fuzzes every operation of the checked-in spec against the real server: no 5xx,
and every response conforms to the spec (status, content type, schema).

The budget: 25 derandomized examples an operation (12 with keys) in `make test`, besides
schemathesis's boundary cases; `make fuzz` (CI runs it after the suite) hunts with 200, and
`FUZZ_EXAMPLES` sets it (`make fuzz FUZZ_EXAMPLES=1000` for a longer hunt). Coverage measures
neither the fuzz's servers (its own) nor this process while it runs: they run, thousands of
times over, lines that other tests cover."""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode, checks

from tests.support.server import server_processes

SPEC = json.loads((Path(__file__).resolve().parents[2] / "openapi" / "openapi.json").read_text())
schema = schemathesis.openapi.from_dict(SPEC)
# Valid and invalid inputs both; derandomized so a CI failure reproduces.
schema.config.generation.update(modes=list(GenerationMode), deterministic=True)

# no_cover: the fuzz is measured by what it finds, not by lines (other tests cover the lines)
pytestmark = [pytest.mark.e2e, pytest.mark.fuzz, pytest.mark.no_cover]
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))


def _own_server(tmp_path_factory: pytest.TempPathFactory, name: str, **env: str) -> Iterator[str]:
    """A real server, as `make run` starts it, for the fuzz alone (not measured by coverage)."""
    folder = tmp_path_factory.mktemp(name)
    launch = (folder / "models", folder / "server.log", {"RNN_SERVE_LOG_LEVEL": "warning", **env})
    with server_processes(launch, measured=False) as [(url, _)]:
        yield url


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _own_server(tmp_path_factory, "fuzz")


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    """One HTTP session for the examples: kept-alive connections (not one connect an example),
    and no proxy settings read from the environment for each (the server is on loopback)."""
    with requests.Session() as http:
        http.trust_env = False
        yield http


def no_server_error(ctx: Any, response: Any, case: schemathesis.Case[Any]) -> bool | None:
    """No 5xx — except the 504 a client asks for with a deadline too short for anything
    (schemathesis sends X-Request-Timeout values such as 5e-324 seconds)."""
    headers: dict[str, Any] = dict(case.headers or {})
    asked = headers.get("X-Request-Timeout")
    if response.status_code == 504 and asked is not None and float(asked) < 1:
        return None
    result: bool | None = checks.not_a_server_error(ctx, response, case)
    return result


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms(
    case: schemathesis.Case[Any], fuzz_server: str, session: requests.Session
) -> None:
    case.call_and_validate(
        base_url=fuzz_server,
        session=session,
        checks=[
            no_server_error,
            checks.status_code_conformance,
            checks.content_type_conformance,
            checks.response_schema_conformance,
        ],
        timeout=30,
    )


FUZZ_KEY = "fuzz-admin-key-0123456789"


@pytest.fixture(scope="module")
def locked_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real server with API keys: the same spec must hold with auth on."""
    yield from _own_server(tmp_path_factory, "locked", RNN_SERVE_ADMIN_KEYS=json.dumps([FUZZ_KEY]))


@schema.parametrize()
@settings(
    max_examples=max(1, EXAMPLES // 2), deadline=None, suppress_health_check=list(HealthCheck)
)
def test_api_conforms_with_keys(
    case: schemathesis.Case[Any], locked_server: str, session: requests.Session
) -> None:
    """With a valid admin key, and (every other example) with none: 401 where a key is needed,
    and still no 5xx and nothing off the spec."""
    keyed = zlib.crc32(f"{case.method} {case.path} {case.body!r}".encode()) % 2 == 0
    case.call_and_validate(
        base_url=locked_server,
        session=session,
        headers={"Authorization": f"Bearer {FUZZ_KEY}"} if keyed else None,
        checks=[
            no_server_error,
            checks.status_code_conformance,
            checks.content_type_conformance,
            checks.response_schema_conformance,
        ],
        timeout=30,
    )

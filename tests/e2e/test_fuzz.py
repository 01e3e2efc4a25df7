"""Schemathesis fuzzes every operation of the checked-in spec against the real server: no 5xx,
and every response conforms to the spec (status, content type, schema)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode, checks

SPEC = json.loads((Path(__file__).resolve().parents[2] / "openapi" / "openapi.json").read_text())
schema = schemathesis.openapi.from_dict(SPEC)
# Valid and invalid inputs both; derandomized so a CI failure reproduces.
schema.config.generation.update(modes=list(GenerationMode), deterministic=True)

pytestmark = [pytest.mark.e2e, pytest.mark.fuzz]


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms(case: schemathesis.Case[Any], live_server: str) -> None:
    case.call_and_validate(
        base_url=live_server,
        checks=[
            checks.not_a_server_error,
            checks.status_code_conformance,
            checks.content_type_conformance,
            checks.response_schema_conformance,
        ],
        timeout=30,
    )

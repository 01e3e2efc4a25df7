"""openapi/openapi.json is the app's generated spec (regenerate with `make openapi`)."""

from __future__ import annotations

import json
from pathlib import Path

from service.openapi_export import render, spec

SPEC_FILE = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


def test_checked_in_spec_is_current() -> None:
    assert SPEC_FILE.read_text() == render(), "openapi/openapi.json is stale: run `make openapi`"


def test_spec_has_stable_operation_ids_and_problem_responses() -> None:
    doc = spec()
    ids = {op["operationId"] for path in doc["paths"].values() for op in path.values()}
    assert {"forward_inline", "forward_model", "register_model", "list_models", "get_model",
            "delete_model", "healthz", "readyz", "metrics"} <= ids  # fmt: skip
    forward = doc["paths"]["/v1/rnn/forward"]["post"]
    assert forward["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/InlineForwardRequest"
    }
    assert "application/problem+json" in forward["responses"]["422"]["content"]
    assert json.dumps(doc).count("HTTPValidationError") == 0

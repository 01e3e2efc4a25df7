"""`python -m service.openapi_export PATH`: write the app's OpenAPI document (make openapi)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from service.app import create_app


def spec() -> dict[str, Any]:
    return create_app().openapi()


def render() -> str:
    return json.dumps(spec(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "openapi/openapi.json")
    target.write_text(render())
    print(f"wrote {target}")

"""The user documents name only what exists: every RNN_SERVE_* variable is a setting (or one of
the few variables of the CLI, the tests or the deployment files), every `service/...` path is a
file or folder of the source, and every `service.x.y` module can be found."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from service.core.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
DOCUMENTS = [ROOT / "README.md", ROOT / "clients" / "python" / "README.md",
             *sorted((ROOT / "docs").glob("*.md"))]  # fmt: skip
# variables that are not settings: the operator CLI's, the test suite's, and those the compose
# file and nginx template read
OTHERS = {"RNN_SERVE_URL", "RNN_SERVE_API_KEY", "RNN_SERVE_TEST_DEVICE", "RNN_SERVE_LISTEN",
          "RNN_SERVE_S3_ACCESS_KEY", "RNN_SERVE_S3_SECRET_KEY", "RNN_SERVE_UPSTREAM_1",
          "RNN_SERVE_UPSTREAM_2", "RNN_SERVE_GRPC_UPSTREAM_1", "RNN_SERVE_GRPC_UPSTREAM_2",
          "RNN_SERVE_GRPC_LISTEN", "RNN_SERVE_PUBLISH_PORT", "RNN_SERVE_GRPC_PUBLISH_PORT"}  # fmt: skip
SETTINGS = {"RNN_SERVE_" + name.upper() for name in Settings.model_fields}


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # (a parent that does not exist)
        return False


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_documents_name_only_settings_that_exist(path: Path) -> None:
    named = set(re.findall(r"\bRNN_SERVE_[A-Z0-9_]*[A-Z0-9]", path.read_text()))
    assert named - SETTINGS - OTHERS == set(), f"{path.name} names settings that do not exist"


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_documents_name_only_source_that_exists(path: Path) -> None:
    text = path.read_text()
    missing = [p for p in set(re.findall(r"\bservice/[\w/]+(?:\.py)?", text))
               if not (ROOT / p.rstrip("/")).exists()]  # fmt: skip
    assert missing == [], f"{path.name} names files that do not exist: {missing}"
    modules = set(re.findall(r"`(service(?:\.\w+)+)`", text))
    unknown = [m for m in modules if not _findable(m)]
    assert unknown == [], f"{path.name} names modules that do not exist: {unknown}"


def test_the_check_sees_stale_names() -> None:
    assert {"RNN_SERVE_SESSION_HANDOFF"} - SETTINGS - OTHERS
    assert not (ROOT / "service/engine/durable.py").exists()
    assert not _findable("service.engine.durable")
    assert not _findable("service.api.edge")
    assert _findable("service.http.edge")

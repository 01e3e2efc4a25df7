"""The rooms hold: no import circle, no upward import, and front-end processes import no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tools import layers


def test_no_circle_and_no_upward_import() -> None:
    graph = layers.imports(layers.modules())
    assert layers.circles(graph) == []
    assert layers.upward(graph) == []


def test_the_checker_sees_an_upward_import() -> None:
    graph = {"service.core.errors": {"service.http.edge"}, "service.http.edge": set()}
    assert layers.upward(graph) == [("service.core.errors", "service.http.edge")]
    assert layers.circles({"service.a": {"service.b"}, "service.b": {"service.a"}}) == [
        ["service.a", "service.b"]
    ]


FRONTEND = """
import sys
from service.app import create_app
from service.core.settings import Settings
app = create_app(Settings(engine_socket="/nonexistent/engine.sock"))
import service.http.v1, service.http.v2, service.http.sessions, service.runtime.transport.client
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""


def test_a_frontend_process_imports_no_torch() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FRONTEND], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_a_module_in_no_layer_is_an_error() -> None:
    """No catch-all: a new module at service/'s root, or a new folder, must be placed."""
    assert layers.layer_of("service.http.edge") == layers.LAYERS.index("http")
    assert layers.layer_of("service.app") == layers.LAYERS.index("entry")
    for stray in ("service.newthing", "service.newfolder.module"):
        with pytest.raises(SystemExit, match="is in no layer"):
            layers.layer_of(stray)

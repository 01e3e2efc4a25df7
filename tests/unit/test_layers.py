"""The rooms hold: no import circle, no upward import, and front-end processes import no torch."""

from __future__ import annotations

import subprocess
import sys

from tools import layers


def test_no_circle_and_no_upward_import() -> None:
    graph = layers.imports(layers.modules())
    assert layers.circles(graph) == []
    assert layers.upward(graph) == []


def test_the_checker_sees_an_upward_import() -> None:
    graph = {"service.errors": {"service.api.edge"}, "service.api.edge": set()}
    assert layers.upward(graph) == [("service.errors", "service.api.edge")]
    assert layers.circles({"service.a": {"service.b"}, "service.b": {"service.a"}}) == [
        ["service.a", "service.b"]
    ]


FRONTEND = """
import sys
from service.app import create_app
from service.settings import Settings
app = create_app(Settings(engine_socket="/nonexistent/engine.sock"))
import service.api.v1, service.api.v2, service.api.sessions, service.engine.transport.client
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""


def test_a_frontend_process_imports_no_torch() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FRONTEND], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr

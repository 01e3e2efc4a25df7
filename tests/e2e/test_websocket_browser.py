"""A real browser streams a session over a WebSocket: headless Chromium loads the shipped page
(examples/ws_browser.html), sends 20 binary frames, and its answers equal the float64 oracle's
for the same input."""

from __future__ import annotations

import http.server
import json
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.oracle import forward, seeded_params

pytestmark = pytest.mark.e2e
PAGE = Path(__file__).resolve().parents[2] / "examples" / "ws_browser.html"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DEFAULT = {"input_size": 10, "hidden_size": 20, "num_layers": 2}


def page_server(reports: queue.Queue[Any]) -> http.server.ThreadingHTTPServer:
    """The page at /, and POST /report for what it found (same origin: no CORS needed)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = PAGE.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers["Content-Length"]))
            reports.put(json.loads(data))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_a_browser_streams_20_binary_chunks_exactly(live_server: str, tmp_path: Path) -> None:
    reports: queue.Queue[Any] = queue.Queue()
    pages = page_server(reports)
    ws = live_server.replace("http://", "ws://")
    url = f"http://127.0.0.1:{pages.server_port}/?server={ws}&model=default&report=/report"
    assert CHROMIUM is not None
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        rows = np.asarray(reports.get(timeout=60), dtype=np.float32)
    finally:
        browser.kill()
        browser.wait(30)
        pages.shutdown()
        pages.server_close()
    t = np.arange(20)[:, None] * 10 + np.arange(10)[None, :]
    x = np.sin(0.1 * t).astype(np.float32)  # what the page sends, step by step
    want, _, _ = forward(seeded_params(DEFAULT), DEFAULT, x)
    assert rows.shape == (20, 20)
    np.testing.assert_allclose(rows, want, atol=1e-5)

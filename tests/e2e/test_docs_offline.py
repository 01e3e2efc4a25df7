"""/docs and /redoc render in a real browser with no network beyond loopback: Debian's chromium,
headless, resolves every other host to nothing, and the DOM must hold Swagger UI's operation
blocks and ReDoc's operations. Their assets come from the package, never a CDN."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def rendered(url: str, profile: Path) -> str:
    assert CHROMIUM is not None
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={profile}",
         # no network: every host but loopback resolves to nothing
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
         "--virtual-time-budget=15000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_pages_name_no_host_but_their_own(live_server: str) -> None:
    for page in ("/docs", "/redoc"):
        html = httpx.get(f"{live_server}{page}").text
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", html), html


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_swagger_ui_and_redoc_render_offline(live_server: str, tmp_path: Path) -> None:
    swagger = rendered(f"{live_server}/docs", tmp_path / "a")
    assert swagger.count('class="opblock ') >= 10, swagger[-3000:]  # one per operation
    assert "/v1/models/{name}/forward" in swagger
    redoc = rendered(f"{live_server}/redoc", tmp_path / "b")
    assert "Forward with a registered model" in redoc, redoc[-3000:]
    assert "operation/" in redoc  # ReDoc's operation anchors

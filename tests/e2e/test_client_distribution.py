"""The client's own distribution: `pip install ./clients/python` into a fresh virtual
environment brings httpx, numpy and tenacity — not torch, FastAPI, uvicorn or pydantic — and
works against the real server from there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]

SMOKE = """
import sys
import numpy as np
from rnn_serve_client import Client, NotFound

with Client(sys.argv[1], headers={"X-Team": "test"}) as rnn:
    assert rnn.live() and rnn.ready()
    assert "sequence" in rnn.server_metadata()["extensions"]
    assert [i["name"] for i in rnn.model_metadata("default")["inputs"]][0] == "input"
    out, h_n = rnn.forward("default", np.zeros((5, 3, 10), np.float32))
    assert out.shape == (5, 3, 20) and h_n.shape == (2, 3, 20)
    with rnn.open_session("default") as s:
        s.forward(np.zeros((4, 10), np.float32))
        assert s.steps == 4 and s.export()[:8]
    try:
        rnn.get_model("nope")
    except NotFound:
        pass
    else:
        raise AssertionError("404 expected")
print("ok")
"""


def test_the_client_installs_alone_and_works(live_server: str, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # No pip of its own (bootstrapping one is most of a venv's cost): this pip installs into it.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    install = subprocess.run(
        [*pip, "install", "-q", str(ROOT / "clients" / "python")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    listed = subprocess.run(
        [*pip, "list", "--format=freeze"], capture_output=True, text=True
    ).stdout.lower()
    names = {line.split("==")[0] for line in listed.splitlines()}
    assert {"httpx", "numpy", "tenacity", "rnn-serve-client"} <= names
    assert not names & {"torch", "fastapi", "uvicorn", "pydantic", "starlette"}, names
    smoke = subprocess.run(
        [str(python), "-c", SMOKE, live_server], capture_output=True, text=True, timeout=120
    )
    assert smoke.returncode == 0, smoke.stderr
    assert smoke.stdout.strip() == "ok"

"""A model trained outside the service, uploaded once, answers identically after the server
restarts and from a second server process sharing the repository folder."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import save

from tests.support.helpers import b64, decode
from tests.support.server import running_server

pytestmark = pytest.mark.e2e

CONFIG = {"input_size": 3, "hidden_size": 8, "num_layers": 2}


def test_restart_and_second_replica(tmp_path: Path) -> None:
    torch.manual_seed(99)
    rnn = torch.nn.RNN(3, 8, 2).eval()
    x = np.random.default_rng(1).standard_normal((6, 2, 3)).astype(np.float32)
    with torch.inference_mode():
        want = rnn(torch.from_numpy(x))[0].numpy()
    body = {"input": b64(x), "output_encoding": "b64"}
    repo, log = tmp_path / "models", tmp_path / "server.log"

    with running_server(repo, log) as a:
        assert (
            httpx.post(f"{a}/v1/models", json={"name": "trained", "config": CONFIG}).status_code
            == 201
        )
        r = httpx.put(f"{a}/v1/models/trained/weights", content=save(rnn.state_dict()),
                      headers={"content-type": "application/octet-stream"})  # fmt: skip
        assert r.status_code == 200, r.text
        first = httpx.post(f"{a}/v1/models/trained/forward", json=body, timeout=30).json()
        np.testing.assert_allclose(decode(first["output"]), want, atol=1e-6)
        with running_server(repo, log) as b:
            second = httpx.post(f"{b}/v1/models/trained/forward", json=body, timeout=30).json()
            assert second["output"] == first["output"]

    with running_server(repo, log) as restarted:
        names = [m["name"] for m in httpx.get(f"{restarted}/v1/models").json()["models"]]
        assert names == ["default", "trained"]
        again = httpx.post(f"{restarted}/v1/models/trained/forward", json=body, timeout=30).json()
        assert again["output"] == first["output"]

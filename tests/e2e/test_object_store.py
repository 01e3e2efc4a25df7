"""Models in a real S3 bucket (SeaweedFS), served by real replicas with no shared volume: what one
registers and uploads, the other serves; restarts give identical answers; a replica killed in
the middle of an upload leaves the old weights served and no torn model."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import save

from tests.support import wait_until
from tests.support.helpers import b64, decode
from tests.support.s3_server import S3Server
from tests.support.server import server_process, server_processes

pytestmark = pytest.mark.e2e
OCTET = {"content-type": "application/octet-stream"}
SMALL = {"input_size": 4, "hidden_size": 6, "num_layers": 2}
BIG = {"input_size": 64, "hidden_size": 1024, "num_layers": 4}  # ~28 MB of float32 weights


def trained(config: dict[str, Any], seed: int) -> bytes:
    torch.manual_seed(seed)
    rnn = torch.nn.RNN(config["input_size"], config["hidden_size"], config["num_layers"])
    return save(rnn.state_dict())


def forward(url: str, name: str, x: np.ndarray) -> np.ndarray:
    r = httpx.post(f"{url}/v1/models/{name}/forward",
                   json={"input": b64(x), "output_encoding": "b64"}, timeout=60)  # fmt: skip
    assert r.status_code == 200, r.text
    return decode(r.json()["output"])


def test_two_replicas_on_one_bucket_through_restarts_and_a_kill(
    s3_server: S3Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = s3_server.url()
    env = {"RNN_SERVE_LOG_LEVEL": "warning", "RNN_SERVE_REPOSITORY_RECHECK_S": "0.2",
           **s3_server.env}  # fmt: skip
    x = np.random.default_rng(0).standard_normal((5, 2, 4)).astype(np.float32)

    def replica(name: str, **more: str) -> Any:
        cache = str(tmp_path / f"cache-{name}")
        return server_process(bucket, tmp_path / f"{name}.log", RNN_SERVE_MODEL_CACHE=cache,
                              **env, **more)  # fmt: skip

    def replicas() -> Any:  # a and b, started side by side
        return server_processes(*(
            (bucket, tmp_path / f"{name}.log", {"RNN_SERVE_MODEL_CACHE": str(tmp_path / f"cache-{name}"), **env})
            for name in "ab"))  # fmt: skip

    weights = trained(SMALL, 3)
    with replicas() as [(a, _), (b, _)]:
        assert httpx.post(f"{a}/v1/models", json={"name": "m", "config": SMALL}).status_code == 201
        r = httpx.put(f"{a}/v1/models/m/weights", content=weights, headers=OCTET, timeout=60)
        assert r.status_code == 200, r.text
        # B sees the upload, byte for byte (recheck: 0.2 s)
        wait_until(lambda: httpx.get(f"{b}/v1/models/m/weights").content == weights, 10)
        first = forward(a, "m", x)
        np.testing.assert_array_equal(forward(b, "m", x), first)
    with replicas() as [(a, _), (b, _)]:  # both restarted: the same answers
        np.testing.assert_array_equal(forward(a, "m", x), first)
        np.testing.assert_array_equal(forward(b, "m", x), first)

    # kill -9 in the middle of an upload of new weights: the old ones stay served
    old = trained(BIG, 1)
    with replica("c") as (c, proc):
        assert httpx.post(f"{c}/v1/models", json={"name": "big", "config": BIG}).status_code == 201
        assert httpx.put(f"{c}/v1/models/big/weights", content=old, headers=OCTET,
                         timeout=120).status_code == 200  # fmt: skip
        new = trained(BIG, 2)
        thread = threading.Thread(
            target=lambda: _ignore(lambda: httpx.put(
                f"{c}/v1/models/big/weights", content=new, headers=OCTET, timeout=120)),
            daemon=True,
        )  # fmt: skip
        thread.start()
        time.sleep(0.6)  # the body is in; its weights are on their way to the bucket
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        thread.join(60)
    with replica("d") as (d, _):
        stored = httpx.get(f"{d}/v1/models/big/weights", timeout=120).content
        assert stored in (old, new)  # never a torn model: the manifest switched or it did not
        with capsys.disabled():
            print(f"\nobject store: killed mid-upload, the bucket serves the "
                  f"{'old' if stored == old else 'new'} weights, whole")  # fmt: skip
        xb = np.random.default_rng(1).standard_normal((3, 1, 64)).astype(np.float32)
        got = forward(d, "big", xb)
        torch.manual_seed(1 if stored == old else 2)
        rnn = torch.nn.RNN(64, 1024, 4).eval()
        with torch.inference_mode():
            want = rnn(torch.from_numpy(xb))[0].numpy()
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert {m["name"] for m in httpx.get(f"{d}/v1/models").json()["models"]} == {
            "big",
            "default",
            "m",
        }


def _ignore(call: Any) -> None:
    with contextlib.suppress(httpx.TransportError):  # the replica was killed under it
        call()

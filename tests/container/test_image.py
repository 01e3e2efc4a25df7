"""The image for real (`make container-test`, after `make image`): started with podman (or
docker), it becomes healthy by its own HEALTHCHECK, answers the README's seed example exactly
(against the float64 oracle), runs as non-root, keeps its model repository volume across a
restart (a registered model with uploaded weights is served again, identical), and on SIGTERM
finishes the forward in flight and exits within the shutdown timeout.

Not part of `make test` (it needs an image): `.ci/run` runs it after the suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import save

from tests.oracle import rnn_forward, seeded_params
from tests.support.server import free_port

pytestmark = pytest.mark.container
ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("IMAGE", "rnn-serve:latest")
ENGINE = shutil.which("docker") if os.environ.get("CONTAINER_ENGINE") == "docker" else None
ENGINE = ENGINE or shutil.which("podman")
SEED = {"input_size": 10, "hidden_size": 20, "num_layers": 2}


def engine(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    assert ENGINE is not None, "podman or docker is needed (make container-test installs podman)"
    env = {
        **os.environ,
        "CONTAINERS_CONF": str(ROOT / "deploy" / "podman" / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(ROOT / "deploy" / "podman" / "storage.conf"),
    }
    return subprocess.run(
        [ENGINE, *args], capture_output=True, text=True, check=check, timeout=timeout, env=env
    )


class Container:
    def __init__(self, name: str, port: int, volume: str) -> None:
        self.name, self.port, self.volume = name, port, volume
        self.url = f"http://127.0.0.1:{port}"

    def run(self) -> None:
        engine("run", "-d", "--name", self.name, "-p", f"127.0.0.1:{self.port}:8000",
               "-v", f"{self.volume}:/data/models",
               "-e", "RNN_SERVE_SHUTDOWN_TIMEOUT_S=20", "-e", "RNN_SERVE_LOG_LEVEL=info",
               IMAGE)  # fmt: skip

    def wait_healthy(self, within: float = 120) -> None:
        """Ready by the image's own HEALTHCHECK command (run as the engine would run it)."""
        deadline = time.monotonic() + within
        while True:
            if engine("healthcheck", "run", self.name, check=False).returncode == 0:
                return
            state = engine("inspect", "-f", "{{.State.Status}}", self.name, check=False)
            if state.stdout.strip() not in ("running", "created", "starting"):
                pytest.fail(f"container stopped: {self.logs()}")
            if time.monotonic() > deadline:
                pytest.fail(f"never healthy: {self.logs()}")
            time.sleep(1)

    def logs(self) -> str:
        out = engine("logs", self.name, check=False)
        return (out.stdout + out.stderr)[-4000:]

    def remove(self) -> None:
        engine("rm", "-f", "-t", "0", self.name, check=False)


@pytest.fixture(scope="module")
def volume() -> Iterator[str]:
    name = f"rnn-serve-test-{os.getpid()}"
    engine("volume", "create", name)
    yield name
    engine("volume", "rm", "-f", name, check=False)


@pytest.fixture(scope="module")
def container(volume: str) -> Iterator[Container]:
    c = Container(f"rnn-serve-test-{os.getpid()}", free_port(), volume)
    c.run()
    try:
        c.wait_healthy()
        yield c
    finally:
        c.remove()


def test_healthy_exact_and_non_root(container: Container) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 10)).astype(np.float32)
    h0 = rng.standard_normal((2, 3, 20)).astype(np.float32)
    r = httpx.post(f"{container.url}/v1/models/default/forward",
                   json={"input": x.tolist(), "h0": h0.tolist()}, timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["output_shape"] == [5, 3, 20]
    assert body["h_n_shape"] == [2, 3, 20]
    want_out, want_hn = rnn_forward(seeded_params(SEED), SEED, x, h0)
    np.testing.assert_allclose(np.asarray(body["output"]), want_out, atol=1e-5)
    np.testing.assert_allclose(np.asarray(body["h_n"]), want_hn, atol=1e-5)
    uid = engine("exec", container.name, "id", "-u").stdout.strip()
    assert uid == "10001"
    assert engine("exec", container.name, "cat", "/proc/1/status").stdout.count("Uid:\t10001") == 1


def test_the_volume_survives_a_restart(container: Container) -> None:
    torch.manual_seed(7)
    trained = torch.nn.RNN(3, 4)
    blob = save(trained.state_dict())
    url = container.url
    assert httpx.post(f"{url}/v1/models", json={"name": "kept", "config": {
        "input_size": 3, "hidden_size": 4}}, timeout=30).status_code == 201  # fmt: skip
    r = httpx.put(f"{url}/v1/models/kept/weights", content=blob, timeout=30,
                  headers={"content-type": "application/octet-stream"})  # fmt: skip
    assert r.status_code == 200, r.text
    x = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    before = httpx.post(f"{url}/v1/models/kept/forward", json={"input": x.tolist()}).json()
    engine("restart", "-t", "30", container.name, timeout=90)
    container.wait_healthy()
    after = httpx.post(f"{url}/v1/models/kept/forward", json={"input": x.tolist()}).json()
    assert after["output"] == before["output"]
    with torch.no_grad():
        local, _ = trained(torch.from_numpy(x))
    np.testing.assert_allclose(np.asarray(after["output"]), local.numpy(), atol=1e-6)
    assert httpx.get(f"{url}/v1/models/kept/weights").content == blob


def test_sigterm_drains_the_forward_in_flight(container: Container) -> None:
    """A forward of a few seconds is in flight when SIGTERM comes: it is answered, then the
    process exits 0, within the shutdown timeout (20 s here)."""
    config = {"input_size": 256, "hidden_size": 1024, "num_layers": 1}
    x = np.zeros((3000, 1, 256), np.float32)
    answer: dict[str, httpx.Response] = {}

    def long_forward() -> None:
        answer["r"] = httpx.post(f"{container.url}/v1/rnn/forward", timeout=60,
                                 json={"config": config, "input": x.tolist()})  # fmt: skip

    t = threading.Thread(target=long_forward)
    t.start()
    time.sleep(1.5)  # the forward is running
    engine("kill", "--signal", "TERM", container.name)
    t.join(60)
    waited = engine("wait", container.name, timeout=60)
    assert answer["r"].status_code == 200, answer["r"].text
    assert answer["r"].json()["output_shape"] == [3000, 1, 1024]
    assert waited.stdout.strip().splitlines()[-1] == "0", container.logs()

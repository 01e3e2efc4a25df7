"""Real replicas behind nginx with the repo's own config (deploy/nginx, as compose mounts it):
concurrent load through nginx while one replica is stopped with SIGTERM (no request may fail),
then while one is SIGKILLed (bounded retries should make failures zero; the count is reported);
sessions in memory kept by affinity alone; and sessions in Redis through replica and Redis
crashes (the chaos test)."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support.helpers import b64, decode
from tests.support.redis_server import REDIS, RedisServer
from tests.support.server import free_port, running_server, server_processes

# no_cover: load through nginx, measured by what is lost and applied twice; the client side,
# traced, cost about as much CPU as the replicas (those that are only load are not measured)
pytestmark = [pytest.mark.e2e, pytest.mark.no_cover]
ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "nginx" / "rnn-serve.conf.template"
INGRESS = ROOT / "deploy" / "k8s" / "ingress.yaml"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def render(template: str, values: dict[str, str], more: Sequence[str] = ()) -> str:
    """What the nginx image's envsubst does: ${NAME} of set variables; $nginx_vars stay.
    `more`: replicas past the template's two, each a server line like the second's."""
    for extra in more:
        template = re.sub(
            r"^(\s*server \$\{RNN_SERVE_UPSTREAM_2\}.*)$",
            lambda m, e=extra: (
                m.group(1)
                + "\n"
                + m.group(1).replace(  # type: ignore[misc]
                    "${RNN_SERVE_UPSTREAM_2}", e
                )
            ),
            template,
            flags=re.M,
        )
    return re.sub(r"\$\{([A-Z0-9_]+)\}", lambda m: values[m.group(1)], template)


def ingress_site(upstreams: list[str], listen: str) -> str:
    """What ingress-nginx makes of deploy/k8s/ingress.yaml, reduced to what routes: the
    controller's http-snippet maps, the sessions Ingress's hash, snippet and paths."""
    import yaml

    config, sessions, _ = yaml.safe_load_all(INGRESS.read_text())
    notes = sessions["metadata"]["annotations"]
    servers = "".join(f"server {u} max_fails=1 fail_timeout=5s; " for u in upstreams)
    hashed = (
        "proxy_pass http://sessions; proxy_next_upstream off; "
        + notes["nginx.ingress.kubernetes.io/configuration-snippet"]
    )
    locations = "".join(
        f"location ~ {p['path']} {{ {hashed} }}\n"
        for p in sessions["spec"]["rules"][0]["http"]["paths"]
    )
    return f"""{config["data"]["http-snippet"]}
upstream sessions {{ hash {notes["nginx.ingress.kubernetes.io/upstream-hash-by"]} consistent;
    {servers} }}
upstream rest {{ {servers} }}
server {{
    listen {listen};
    {locations}
    location / {{ proxy_pass http://rest; }}
}}
"""


def nginx(
    prefix: Path,
    upstreams: list[str],
    ingress: bool = False,
    grpc: tuple[str, list[str]] | None = None,
) -> Iterator[str]:
    """nginx on a free port with the compose template (or, `ingress`, the k8s Ingress's
    routing) in front of `upstreams`; yields its URL. `grpc`: where the template's gRPC server
    listens, and its replicas (else a free port before the HTTP ones, unused)."""
    port = free_port()
    grpc_listen, grpc_upstreams = grpc or (f"127.0.0.1:{free_port()}", upstreams)
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    if ingress:
        site = ingress_site(upstreams, f"127.0.0.1:{port}")
    else:
        site = render(TEMPLATE.read_text(), {
            "RNN_SERVE_UPSTREAM_1": upstreams[0], "RNN_SERVE_UPSTREAM_2": upstreams[1],
            "RNN_SERVE_LISTEN": f"127.0.0.1:{port}",
            "RNN_SERVE_GRPC_UPSTREAM_1": grpc_upstreams[0],
            "RNN_SERVE_GRPC_UPSTREAM_2": grpc_upstreams[1], "RNN_SERVE_GRPC_LISTEN": grpc_listen,
        }, upstreams[2:])  # fmt: skip
    (prefix / "site.conf").write_text(site)
    (prefix / "nginx.conf").write_text(f"""
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    include {prefix}/site.conf;
}}
""")
    assert NGINX is not None
    proc = subprocess.Popen(
        [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"]
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            if proc.poll() is not None:
                pytest.fail(f"nginx exited with {proc.returncode} (its configuration?)")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


class Load:
    """Threads sending forwards through nginx until stopped; every answer checked."""

    def __init__(self, url: str, body: dict[str, Any], want: np.ndarray, threads: int = 8) -> None:
        self.url, self.body, self.want = url, body, want
        self.ok = self.failed = self.wrong = 0
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    r = client.post("/v1/models/default/forward", json=self.body)
                    good = r.status_code == 200
                    right = good and np.abs(decode(r.json()["output"]) - self.want).max() < 1e-5
                except httpx.TransportError as exc:
                    good, right = False, False
                    r = exc  # type: ignore[assignment]
                with self.lock:
                    if not good:
                        self.failed += 1
                        self.errors.append(str(getattr(r, "status_code", r)))
                    elif not right:
                        self.wrong += 1
                    else:
                        self.ok += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/run installs it)")
def test_sigterm_and_sigkill_behind_nginx(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "models"
    x = np.random.default_rng(0).standard_normal((20, 4, 10)).astype(np.float32)
    body = {"input": b64(x), "output_encoding": "b64"}
    env = {"RNN_SERVE_LOG_LEVEL": "warning", "RNN_SERVE_SHUTDOWN_TIMEOUT_S": "20"}
    with server_processes(
        (repo, tmp_path / "a.log", env), (repo, tmp_path / "b.log", env), measured=False
    ) as [
        (a, proc_a),
        (b, proc_b),
    ]:
        want = decode(
            httpx.post(f"{a}/v1/models/default/forward", json=body, timeout=30).json()["output"]
        )
        lb_iter = nginx(tmp_path / "nginx", [a.removeprefix("http://"), b.removeprefix("http://")])
        lb = next(lb_iter)
        try:
            with Load(lb, body, want) as load:
                time.sleep(1.5)
                proc_a.send_signal(signal.SIGTERM)  # graceful: drains in-flight, then exits
                time.sleep(2.5)
            term = (load.ok, load.failed, load.wrong, load.errors[:5])
            assert load.ok > 50, term
            assert load.failed == 0, term
            assert load.wrong == 0, term

            # B alone now: bring up a replica in A's place, then kill B without warning.
            # it drained and exited (uvicorn re-raises SIGTERM once shut down: -15 is the clean end)
            assert proc_a.wait(30) in (0, -signal.SIGTERM)
            with server_processes((repo, tmp_path / "c.log", env), measured=False) as [(c, _)]:
                lb_iter2 = nginx(
                    tmp_path / "nginx2", [b.removeprefix("http://"), c.removeprefix("http://")]
                )
                lb2 = next(lb_iter2)
                try:
                    with Load(lb2, body, want) as load2:
                        time.sleep(1.5)
                        proc_b.send_signal(signal.SIGKILL)
                        time.sleep(2.5)
                    kill = (load2.ok, load2.failed, load2.wrong, load2.errors[:5])
                    with capsys.disabled():
                        print(f"\nscale-out: SIGTERM {term[0]} ok / {term[1]} failed; "
                              f"SIGKILL {kill[0]} ok / {kill[1]} failed ({kill[3]})")  # fmt: skip
                    assert load2.wrong == 0, kill
                    assert load2.ok > 50, kill
                    assert load2.failed <= 2, kill  # retries to the next replica absorb the kill
                finally:
                    next(lb_iter2, None)
        finally:
            next(lb_iter, None)


SEED = {"input_size": 10, "hidden_size": 20, "num_layers": 2}
CHUNKS_SERVED = (
    r'^rnn_serve_requests_total\{method="POST",protocol="http",'
    r'route="/v1/sessions/\{session_id\}/forward",status="200"\} ([0-9.e+]+)$'
)


def _v1_stream(lb: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A session opened with no id of the client's, fed 6 chunks: (output, input)."""
    x = np.random.default_rng(seed).standard_normal((18, 1, 10)).astype(np.float32)
    outs = []
    with httpx.Client(base_url=lb, timeout=30) as c:
        r = c.post("/v1/models/default/sessions", json={})
        assert r.status_code == 201, r.text
        sid = r.json()["session_id"]
        for i in range(0, 18, 3):
            r = c.post(f"/v1/sessions/{sid}/forward",
                       json={"input": b64(x[i : i + 3]), "output_encoding": "b64"})  # fmt: skip
            assert r.status_code == 200, (sid, i, r.status_code, r.text)
            outs.append(decode(r.json()["output"]))
        assert c.delete(f"/v1/sessions/{sid}").status_code == 204
    return np.concatenate(outs), x


def _oip_sequence(lb: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An OIP sequence of 5 infers, its id in the body and in X-Sequence-ID."""
    x = np.random.default_rng(seed).standard_normal((15, 10)).astype(np.float32)
    outs = []
    sequence = f"seq-{seed}"
    with httpx.Client(base_url=lb, timeout=30, headers={"X-Sequence-ID": sequence}) as c:
        for k, i in enumerate(range(0, 15, 3)):
            chunk = x[i : i + 3]
            body = {
                "inputs": [{"name": "input", "shape": list(chunk.shape), "datatype": "FP32",
                            "data": chunk.ravel().tolist()}],
                "parameters": {"sequence_id": sequence, "sequence_start": k == 0,
                               "sequence_end": k == 4},
            }  # fmt: skip
            r = c.post("/v2/models/default/infer", json=body)
            assert r.status_code == 200, (sequence, k, r.status_code, r.text)
            out = next(o for o in r.json()["outputs"] if o["name"] == "output")
            outs.append(np.asarray(out["data"], dtype=np.float32).reshape(out["shape"]))
    return np.concatenate(outs), x


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/run installs it)")
@pytest.mark.parametrize("balancer", ["compose", "k8s-ingress"])
def test_sessions_and_sequences_stick_to_their_replica_with_no_client_ids(
    tmp_path: Path, balancer: str
) -> None:
    """32 v1 sessions opened without X-Session-ID and 16 OIP sequences, all at once through the
    shipped nginx (or the k8s Ingress's routing) with two replicas: every chunk reaches the
    replica holding its state (before the load balancer made the ids, about half failed), and
    every stream equals the oracle. Sessions are in memory: affinity alone must do it."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.oracle import forward, seeded_params

    repo = tmp_path / "models"
    env = {"RNN_SERVE_LOG_LEVEL": "warning"}  # sessions in memory: affinity alone must do it
    params = seeded_params(SEED)
    with server_processes(
        (repo, tmp_path / "a.log", env), (repo, tmp_path / "b.log", env), measured=False
    ) as [
        (a, _),
        (b, _),
    ]:
        upstreams = [a.removeprefix("http://"), b.removeprefix("http://")]
        lb_iter = nginx(tmp_path / "nginx", upstreams, ingress=balancer == "k8s-ingress")
        lb = next(lb_iter)
        try:
            with ThreadPoolExecutor(48) as pool:
                streams = [pool.submit(_v1_stream, lb, s) for s in range(32)]
                sequences = [pool.submit(_oip_sequence, lb, 100 + s) for s in range(16)]
                for f in [*streams, *sequences]:
                    got, x = f.result()
                    want, _, _ = forward(params, SEED, x)
                    np.testing.assert_allclose(got, want.reshape(got.shape), atol=1e-5)
            # both replicas held some: the hash spread them
            served = {
                url: sum(
                    float(v) for v in re.findall(
                        CHUNKS_SERVED, httpx.get(f"{url}/metrics").text, re.M)
                )
                for url in (a, b)
            }  # fmt: skip
            assert all(n > 0 for n in served.values()), served
            if balancer == "compose":  # correlation ids survive the load balancer
                r = httpx.get(f"{lb}/healthz", headers={"X-Request-ID": "corr-123"})
                assert r.headers["x-request-id"] == "corr-123"
                made = httpx.get(f"{lb}/healthz").headers["x-request-id"]
                assert re.fullmatch(r"[0-9a-f]{32}", made), made  # nginx's $request_id
        finally:
            next(lb_iter, None)


class Stream(threading.Thread):
    """One real-time stream through the load balancer, with the Python client: a session opened
    with no id of the client's, chunks of 5 steps every 0.1 s until told to stop (and at least
    `least`). Keeps every answer, to check against the oracle."""

    def __init__(self, lb: str, seed: int, stop: threading.Event, least: int = 10) -> None:
        super().__init__(daemon=True)
        self.lb, self.stop_event, self.least = lb, stop, least
        self.rng = np.random.default_rng(seed)
        self.inputs: list[np.ndarray] = []
        self.outputs: list[np.ndarray] = []
        self.steps_seen = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        from service.client import Client

        try:
            with Client(self.lb, backoff=0.05, retries=12, stream_retries=40, timeout=30) as rnn:
                session = rnn.open_session("default")
                while len(self.inputs) < self.least or not self.stop_event.is_set():
                    x = self.rng.standard_normal((5, 1, 10)).astype(np.float32)
                    self.inputs.append(x)
                    out, _ = session.forward(x)  # resent on 502/503/504: start_step says where
                    self.outputs.append(out)
                    time.sleep(0.1)
                self.steps_seen = session.steps
                session.close()
        except BaseException as exc:  # reported by the test
            self.error = exc


def _counter(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M))


@pytest.mark.skipif(NGINX is None or REDIS is None, reason="needs nginx and redis-server")
def test_chaos_sessions_in_redis_lose_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three replicas behind the shipped nginx, sessions in Redis (AOF, fsync always). 32
    streams with no client-chosen ids while replicas are SIGKILLed and started again, one after
    another, and Redis itself is killed and restarted once. Every stream equals the float64
    oracle over its whole input: 0 sessions lost, 0 chunks applied twice."""
    from tests.oracle import forward, seeded_params

    repo = tmp_path / "models"
    redis = RedisServer(tmp_path / "redis").start()
    env = {"RNN_SERVE_LOG_LEVEL": "warning", "RNN_SERVE_SESSION_STORE": redis.url,
           "RNN_SERVE_SESSION_STORE_TIMEOUT_S": "1"}  # fmt: skip
    params = seeded_params(SEED)
    ports = [free_port() for _ in range(3)]
    with contextlib.ExitStack() as stack:
        procs: dict[int, subprocess.Popen[bytes]] = {}
        logs = {p: tmp_path / f"replica-{p}.log" for p in ports}

        def start(*on: int) -> None:  # replicas on these ports, started side by side
            launches = ((repo, logs[p], {"RNN_SERVE_PORT": str(p), **env}) for p in on)
            started = stack.enter_context(server_processes(*launches, measured=False))
            procs.update((p, proc) for p, (_, proc) in zip(on, started, strict=True))

        start(*ports)
        lb_iter = nginx(tmp_path / "nginx", [f"127.0.0.1:{p}" for p in ports])
        lb = next(lb_iter)
        stack.callback(lambda: next(lb_iter, None))
        stack.callback(redis.stop)
        stop = threading.Event()
        streams = [Stream(lb, s, stop, least=40) for s in range(32)]
        for s in streams:
            s.start()
        kills = 0
        time.sleep(1.0)
        for round_, port in enumerate(ports):  # each replica killed once, Redis once
            procs[port].kill()  # no warning, no drain: whatever it held in memory is gone
            procs[port].wait(30)
            kills += 1
            if round_ == 1:
                redis.restart()  # killed too, and back on its append-only file
            start(port)  # in its place, on its port: nginx takes it back after fail_timeout
            time.sleep(0.5)
        time.sleep(1.0)
        stop.set()
        chunks = 0
        for s in streams:
            s.join(180)
            assert not s.is_alive()
            assert s.error is None, repr(s.error)
            x = np.concatenate(s.inputs)
            chunks += len(s.inputs)
            assert len(s.outputs) == len(s.inputs)
            assert s.steps_seen == x.shape[0]  # every chunk applied exactly once
            want, _, _ = forward(params, SEED, x)
            np.testing.assert_allclose(np.concatenate(s.outputs), want, atol=1e-5)
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        replays = sum(_counter(u, "rnn_serve_session_replays_total") for u in urls)
        misses = sum(_counter(u, "rnn_serve_session_cache_misses_total") for u in urls)
        conflicts = sum(_counter(u, "rnn_serve_session_store_conflicts_total") for u in urls)
        with capsys.disabled():
            print(
                f"\nchaos: 3 replicas, {kills} SIGKILLs and one Redis restart, 32 streams, "
                f"{chunks} chunks: 0 sessions lost, 0 chunks applied twice ({replays:g} resent "
                f"chunks answered from the kept answer, {misses:g} sessions read from Redis, "
                f"{conflicts:g} commit conflicts, since the last restarts)"
            )


@pytest.mark.skipif(NGINX is None or REDIS is None, reason="needs nginx and redis-server")
def test_grpc_through_nginx_to_replicas_sharing_redis(tmp_path: Path) -> None:
    """tritonclient.grpc through the shipped nginx template's gRPC server (grpc_pass, HTTP/2)
    to two replicas with sessions in Redis: unary calls are spread over both, and sequences
    streamed on new connections go on whichever replica each reaches."""
    import queue
    import warnings

    from tests.oracle import rnn_forward, seeded_params

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import tritonclient.grpc as triton

    redis = RedisServer(tmp_path / "redis").start()
    grpc_ports = [free_port(), free_port()]
    listen = f"127.0.0.1:{free_port()}"
    env = {"RNN_SERVE_LOG_LEVEL": "warning", "RNN_SERVE_SESSION_STORE": redis.url}
    rng = np.random.default_rng(4)
    x = rng.standard_normal((12, 1, 10)).astype(np.float32)
    try:
        with contextlib.ExitStack() as stack:
            urls = [
                stack.enter_context(
                    running_server(
                        tmp_path / "models",
                        tmp_path / f"{p}.log",
                        RNN_SERVE_GRPC_PORT=str(p),
                        **env,
                    )
                )
                for p in grpc_ports
            ]
            upstreams = [u.removeprefix("http://") for u in urls]
            grpc_upstreams = [f"127.0.0.1:{p}" for p in grpc_ports]
            lb = nginx(tmp_path / "nginx", upstreams, grpc=(listen, grpc_upstreams))
            next(lb)
            stack.callback(lambda: next(lb, None))
            outs = []
            for k in range(4):  # each chunk on a new connection and stream
                client = triton.InferenceServerClient(listen)
                answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
                client.start_stream(lambda result, error, q=answers: q.put((result, error)))
                item = triton.InferInput("input", [3, 1, 10], "FP32")
                item.set_data_from_numpy(x[3 * k : 3 * k + 3])
                client.async_stream_infer("default", [item], sequence_id=5,
                                          sequence_start=k == 0, sequence_end=k == 3)  # fmt: skip
                result, error = answers.get(timeout=60)
                assert error is None, error
                outs.append(result.as_numpy("output"))
                client.stop_stream()
                client.close()
            want, _ = rnn_forward(seeded_params(SEED), SEED, x)
            np.testing.assert_allclose(np.concatenate(outs), want, atol=1e-5)
            client = triton.InferenceServerClient(listen)
            try:
                for _ in range(6):
                    item = triton.InferInput("input", [3, 1, 10], "FP32")
                    item.set_data_from_numpy(x[:3])
                    client.infer("default", [item])
            finally:
                client.close()
            served = [_counter(u, "rnn_serve_model_inferences_total") for u in urls]
            assert all(n > 0 for n in served), served  # nginx spread the calls over both
    finally:
        redis.stop()

"""Deployment files, checked as far as this machine allows (no Docker engine, no cluster)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from service.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# The Compose Specification's JSON schema, as shipped in docker-compose 1.29.2 (compose/config/).
COMPOSE_SCHEMA = json.loads((Path(__file__).parent / "schemas" / "compose-spec.json").read_text())
# Its "$schema" says draft/2019-09 with a '#' jsonschema does not recognise: name the draft.
COMPOSE = jsonschema.Draft201909Validator(
    {k: v for k, v in COMPOSE_SCHEMA.items() if k != "$schema"}
)


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    COMPOSE.validate(compose)
    services = compose["services"]
    replicas = [name for name in services if name.startswith("rnn-serve-")]
    assert len(replicas) >= 2
    for name in replicas:
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"])
        # no shared volume: models in the stack's S3 gateway, sessions in its Redis
        assert "volumes" not in services[name]
        env = services[name]["environment"]
        assert env["RNN_SERVE_MODEL_REPOSITORY"].startswith("s3://")
        assert env["AWS_ENDPOINT_URL"] == "http://s3:8333"
        assert env["RNN_SERVE_SESSION_STORE"].startswith("redis://redis:")
        # API keys from a secret, never from the file itself
        secret = services[name]["secrets"][0]
        assert secret in compose["secrets"]
        assert services[name]["environment"]["RNN_SERVE_API_KEYS_FILE"] == f"/run/secrets/{secret}"
    for secret in compose["secrets"].values():  # key files are never committed
        ignored = subprocess.run(["git", "check-ignore", "-q", secret["file"]], cwd=ROOT)
        assert ignored.returncode == 0, f"{secret['file']} is not git-ignored"
    nginx = services["nginx"]
    template = nginx["volumes"][0].split(":")[0]
    assert (ROOT / template).is_file()
    assert {f"{name}:8000" for name in replicas} == {
        v for k, v in nginx["environment"].items() if k.startswith("RNN_SERVE_UPSTREAM_")
    }
    assert {f"{name}:8001" for name in replicas} == {
        v for k, v in nginx["environment"].items() if k.startswith("RNN_SERVE_GRPC_UPSTREAM_")
    }
    assert nginx["ports"][1].endswith("8001}:81")  # gRPC published through nginx
    assert services["prometheus"]["profiles"] == ["monitoring"]
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert set(prom["scrape_configs"][0]["static_configs"][0]["targets"]) == {
        f"{n}:8000" for n in replicas
    }


def test_compose_schema_rejects_a_broken_file() -> None:
    with pytest.raises(jsonschema.ValidationError):
        COMPOSE.validate({"services": {"x": {"ports": "not a list", "nonsense": 1}}})


def merge(base: Any, patch: Any) -> Any:
    """A strategic merge patch's essentials: dicts merged, lists of named items merged by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = {k: merge(base[k], v) if k in base else v for k, v in patch.items()}
        return merged | {k: v for k, v in base.items() if k not in patch}
    named = isinstance(base, list) and isinstance(patch, list)
    if named and all(isinstance(i, dict) and "name" in i for i in [*base, *patch]):
        by_name = {i["name"]: i for i in base}
        out = [merge(by_name[i["name"]], i) if i["name"] in by_name else i for i in patch]
        return out + [i for i in base if i["name"] not in {p["name"] for p in patch}]
    return patch


def test_kubernetes_manifests_validate() -> None:
    k8s = ROOT / "deploy" / "k8s"
    docs = [
        d
        for name in ("rnn-serve.yaml", "ingress.yaml")
        for d in yaml.safe_load_all((k8s / name).read_text())
        if d
    ]
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "Ingress", "ConfigMap"}
    for doc in docs:
        kubernetes_validate.validate(doc, "1.31", strict=True)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    gpu = merge(deployment, yaml.safe_load((k8s / "gpu-patch.yaml").read_text()))
    kubernetes_validate.validate(gpu, "1.31", strict=True)
    container = gpu["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["readinessProbe"] == {"grpc": {"port": 8001}, "periodSeconds": 5,
                                           "failureThreshold": 2}  # kept from the base  # fmt: skip


def test_torch_threads_match_the_cpu_limit_and_a_pdb_guards_the_replicas() -> None:
    """Each replica's torch threads are its CPU limit less one (the event loop), in the base and
    the GPU variant; voluntary disruptions keep a replica serving."""
    k8s = ROOT / "deploy" / "k8s"
    docs = list(yaml.safe_load_all((k8s / "rnn-serve.yaml").read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    gpu = merge(deployment, yaml.safe_load((k8s / "gpu-patch.yaml").read_text()))
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    store = next(e for e in env if e["name"] == "RNN_SERVE_SESSION_STORE")
    # sessions in Redis when the Secret holds its URL, in memory without it
    assert store["valueFrom"]["secretKeyRef"] == {
        "name": "rnn-serve-session-store",
        "key": "url",
        "optional": True,
    }
    for variant in (deployment, gpu):
        container = variant["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        limit = int(container["resources"]["limits"]["cpu"])
        assert int(env["RNN_SERVE_TORCH_THREADS"]) == limit - 1
        assert container["resources"]["requests"]["cpu"] == container["resources"]["limits"]["cpu"]
    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]


@pytest.mark.e2e
def test_healthchecks_use_the_configured_port() -> None:
    """Docker's HEALTHCHECK and compose's run the same probe, on RNN_SERVE_PORT: run it against
    a server on another port than 8000."""
    import re

    dockerfile = (ROOT / "Dockerfile").read_text()
    probe = re.search(r'HEALTHCHECK .*?CMD \["python", "-c", "(.*?)"\]', dockerfile, re.S)
    assert probe is not None
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["x-rnn-serve"]["healthcheck"]["test"][-1] == probe.group(1)
    from tests.support.server import running_server

    tmp = Path(tempfile.mkdtemp())
    with running_server(tmp / "models", tmp / "log") as url:
        port = url.rsplit(":", 1)[1]
        env = {**os.environ, "RNN_SERVE_PORT": port}
        assert subprocess.run([sys.executable, "-c", probe.group(1)], env=env).returncode == 0
        env["RNN_SERVE_PORT"] = "9"  # nothing there: unhealthy
        assert subprocess.run([sys.executable, "-c", probe.group(1)], env=env,
                              capture_output=True).returncode != 0  # fmt: skip


def test_grafana_dashboard_queries_name_metrics_the_server_exports() -> None:
    """Valid JSON, and every metric a panel's query names is one /metrics has (after a forward,
    a session and an OIP infer)."""
    import re

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "rnn-serve.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    exported = _exported_metric_names()
    functions = {"sum", "rate", "histogram_quantile", "by", "le", "route", "status", "model",
                 "outcome", "stage", "op", "job", "instance"}  # fmt: skip
    for expr in exprs:
        names = set(re.findall(r"[a-z_:][a-z0-9_:]*", re.sub(r'"[^"]*"|\[[^\]]*\]', "", expr)))
        metrics = names - functions
        assert metrics, expr
        for name in metrics:
            assert name in exported, (name, expr)


def _exported_metric_names() -> set[str]:
    import asyncio

    from tests.conftest import make_settings, open_client

    async def scrape() -> str:
        async for c in open_client(make_settings()):
            await c.post("/v1/models/default/forward", json={"input": [[0.0] * 10]})
            sid = (await c.post("/v1/models/default/sessions", json={})).json()["session_id"]
            await c.post(f"/v1/sessions/{sid}/forward", json={"input": [[0.0] * 10]})
            await c.post(f"/v1/sessions/{sid}/forward", json={"input": [[0.0] * 10]})
            return (await c.get("/metrics")).text
        raise AssertionError("no app")

    text = asyncio.run(scrape())
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            if kind == "counter":
                names.add(f"{name}_total" if not name.endswith("_total") else name)
    return names


def test_deployment_probes_match_the_service() -> None:
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "rnn-serve.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler"} <= set(kinds)
    assert "PersistentVolumeClaim" not in kinds  # models in a bucket, sessions in Redis
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    # readiness through the gRPC health service (which follows /readyz), on the gRPC port the
    # container declares and the server listens on (RNN_SERVE_GRPC_PORT's default)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["grpc"]["port"] == ports["grpc"] == 8001
    assert Settings.model_fields["grpc_port"].default == 8001
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    services = [d for d in docs if d["kind"] == "Service"]
    headless = next(s for s in services if s["spec"].get("clusterIP") == "None")
    assert headless["spec"]["ports"][0]["targetPort"] == "grpc"  # clients balance over pods
    grace = kinds["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    timeout = next(
        e["value"] for e in container["env"] if e["name"] == "RNN_SERVE_SHUTDOWN_TIMEOUT_S"
    )
    assert grace > float(timeout)
    # API keys from the Secret, mounted read-only where RNN_SERVE_API_KEYS_FILE points
    keys_file = next(e["value"] for e in container["env"] if e["name"] == "RNN_SERVE_API_KEYS_FILE")
    mount = next(m for m in container["volumeMounts"] if keys_file.startswith(m["mountPath"]))
    assert mount.get("readOnly") is True
    volume = next(
        v for v in kinds["Deployment"]["spec"]["template"]["spec"]["volumes"]
        if v["name"] == mount["name"]
    )  # fmt: skip
    assert volume["secret"]["secretName"] == "rnn-serve-api-keys"


def test_kubernetes_validation_catches_mistakes() -> None:
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"replicas": "two", "selector": {}, "template": {}}}  # fmt: skip
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.31", strict=True)


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kserve_inference_service() -> None:
    """The KServe predictor: its pod (containers, volumes) validates against the Kubernetes
    schemas, and what KServe and rnn-serve expect of each other holds: the v2 protocol's health
    paths as probes, the container listening where RNN_SERVE_PORT says, threads within the CPU
    limit, models from a bucket with no shared volume. (KServe's own CRD schema is not vendored
    here.)"""
    isvc = yaml.safe_load((ROOT / "deploy" / "kserve" / "inferenceservice.yaml").read_text())
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    predictor = isvc["spec"]["predictor"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": isvc["metadata"]["name"]},
        "spec": {"containers": predictor["containers"], "volumes": predictor["volumes"]},
    }
    kubernetes_validate.validate(pod, "1.31", strict=True)
    (container,) = predictor["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    port = int(env["RNN_SERVE_PORT"])
    assert container["ports"][0]["containerPort"] == port
    assert container["ports"][1] == {"name": "h2c", "containerPort": int(env["RNN_SERVE_GRPC_PORT"]),
                                     "protocol": "TCP"}  # fmt: skip
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": port}
    assert int(env["RNN_SERVE_TORCH_THREADS"]) == int(container["resources"]["limits"]["cpu"]) - 1
    assert env["RNN_SERVE_MODEL_REPOSITORY"].startswith("s3://")  # a bucket: no shared volume
    volumes = {v["name"]: v for v in predictor["volumes"]}
    assert "persistentVolumeClaim" not in str(volumes)
    assert volumes["model-cache"]["emptyDir"]["sizeLimit"]
    assert min(predictor["minReplicas"], predictor["maxReplicas"]) >= 1

"""The model repository in object storage, measured against a real S3 server on this machine
(SeaweedFS, `weed server -s3`): the client chosen (obstore) against boto3, a model's first use
from the bucket and from the local cache, upload and export throughput, and a lookup's cost
(which never reaches the store).

    python -m bench.repository        # make bench-repository

Writes bench/out/repository.json.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from bench.harness import OUT
from service.catalog.cache import WeightsCache
from service.catalog.catalog import Catalog
from service.catalog.objects import ObjectRepository
from service.core.metrics import Metrics
from service.core.schemas.config import RNNConfig
from service.core.settings import Settings
from tests.support.s3_server import BUCKET, S3Server

BIG = RNNConfig(input_size=64, hidden_size=1024, num_layers=4)  # ~28 MB of float32 weights


def timed(fn: Callable[[], Any], n: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def clients(server: S3Server, out: dict[str, Any]) -> None:
    """Small-object latency and big-object throughput, obstore against boto3."""
    import boto3
    import obstore
    from obstore.store import S3Store

    env = server.env
    b3 = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")  # fmt: skip
    ob = S3Store(BUCKET, endpoint=server.endpoint, access_key_id=env["AWS_ACCESS_KEY_ID"],
                 secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region="us-east-1",
                 client_options={"allow_http": True})  # fmt: skip
    small, big = os.urandom(1024), os.urandom(32 << 20)
    ops = {
        "boto3": (lambda k, d: b3.put_object(Bucket=BUCKET, Key=k, Body=d),
                  lambda k: b3.get_object(Bucket=BUCKET, Key=k)["Body"].read()),
        "obstore": (lambda k, d: obstore.put(ob, k, d), lambda k: bytes(obstore.get(ob, k).bytes())),
    }  # fmt: skip
    for name, (put, get) in ops.items():
        out[f"client_{name}"] = _client(name, put, get, small, big)
        print(name, {k: round(v, 2) for k, v in out[f"client_{name}"].items()}, flush=True)


def _client(name: str, put: Any, get: Any, small: bytes, big: bytes) -> dict[str, float]:
    cpu0 = time.process_time()
    lat = []
    for i in range(100):
        t = time.perf_counter()
        put(f"bench/{name}/s{i}", small)
        lat.append(time.perf_counter() - t)
    gets = []
    for i in range(100):
        key = f"bench/{name}/s{i}"
        started = time.perf_counter()
        get(key)
        gets.append(time.perf_counter() - started)
    up = timed(lambda: put(f"bench/{name}/big", big), 3)
    down = timed(lambda: get(f"bench/{name}/big"), 3)
    return {
        "put_1kb_p50_ms": 1000 * statistics.median(lat),
        "get_1kb_p50_ms": 1000 * statistics.median(gets),
        "put_mb_s": 32 / up, "get_mb_s": 32 / down,
        "client_cpu_s": time.process_time() - cpu0,
    }  # fmt: skip


def repository(server: S3Server, work: Path, out: dict[str, Any]) -> None:
    torch.manual_seed(0)
    weights = save(torch.nn.RNN(BIG.input_size, BIG.hidden_size, BIG.num_layers).state_dict())
    mb = len(weights) / 1e6
    url = server.url()
    repo = ObjectRepository(url, WeightsCache(work / "cache-a", 1 << 30))
    repo.create("big", BIG, b"seed")
    upload = timed(lambda: repo.replace_weights("big", weights))
    cold = ObjectRepository(url, WeightsCache(work / "cache-b", 1 << 30))
    first = timed(lambda: cold.read_weights("big"))  # from the bucket, into the cache
    again = ObjectRepository(url, WeightsCache(work / "cache-b", 1 << 30))  # a restart
    cached = timed(lambda: again.read_weights("big"))
    settings = Settings(_env_file=None, model_repository=url, model_cache=work / "cache-c")
    catalog = Catalog(settings, Metrics())
    catalog.get("big")
    lookup = timed(lambda: catalog.get("big"), 20000)
    folder = Catalog(Settings(_env_file=None, model_repository=str(work / "folder")), Metrics())
    folder.register("big", BIG, lambda: weights)
    folder_lookup = timed(lambda: folder.get("big"), 20000)
    out["repository"] = {
        "weights_mb": mb, "upload_mb_s": mb / upload, "first_use_from_bucket_ms": 1000 * first,
        "first_use_from_cache_ms": 1000 * cached, "export_mb_s": mb / first,
        "lookup_us_object_store": 1e6 * lookup, "lookup_us_folder": 1e6 * folder_lookup,
    }  # fmt: skip
    print({k: round(v, 2) for k, v in out["repository"].items()}, flush=True)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="rnn-serve-repository-bench-"))
    server = S3Server(work / "s3").start()
    server.export_env()
    out: dict[str, Any] = {}
    try:
        clients(server, out)
        repository(server, work, out)
    finally:
        server.stop()
    OUT.mkdir(exist_ok=True)
    (OUT / "repository.json").write_text(json.dumps(out, indent=1))
    print(f"wrote {OUT / 'repository.json'}")


if __name__ == "__main__":
    main()

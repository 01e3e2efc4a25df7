"""Load testing for users: Locust scenarios against a running rnn-serve.

    pip install -e '.[load]'
    locust -f bench/locustfile.py --headless -u 64 -r 16 -t 60s \
        --host http://127.0.0.1:8000 --csv bench/out/locust --only-summary

prints requests/s and the p50/p90/p99 latency of each scenario (and writes them as CSV). Pick
scenarios with tags, e.g. `--tags seed` or `--tags stream`.
"""

from __future__ import annotations

import json
import random

import numpy as np
from locust import FastHttpUser, between, tag, task

from service.client import b64_tensor

RNG = np.random.default_rng(0)
BIG = {"input_size": 64, "hidden_size": 128, "num_layers": 2}


SEED_BODY = json.dumps({"input": RNG.standard_normal((5, 3, 10)).tolist()})
BIG_BODY = json.dumps({"input": RNG.standard_normal((50, 1, 64)).tolist()})
LARGE_B64_BODY = json.dumps(
    {"input": b64_tensor(RNG.standard_normal((50, 32, 64))), "output_encoding": "b64"}
)
CHUNK_BODY = json.dumps(
    {"input": b64_tensor(RNG.standard_normal((5, 1, 10))), "output_encoding": "b64"}
)
JSON = {"Content-Type": "application/json"}


class RNNServeUser(FastHttpUser):
    wait_time = between(0, 0.01)

    def on_start(self) -> None:
        self.client.post(
            "/v1/models", data=json.dumps({"name": "big", "config": BIG}), headers=JSON
        )
        self.session: str | None = None

    @tag("seed")
    @task(8)
    def seed_shape(self) -> None:
        self.client.post(
            "/v1/models/default/forward", data=SEED_BODY, headers=JSON, name="seed 10→20 L=5 N=3"
        )

    @tag("big")
    @task(4)
    def big_shape(self) -> None:
        self.client.post(
            "/v1/models/big/forward", data=BIG_BODY, headers=JSON, name="64→128 L=50 N=1"
        )

    @tag("large")
    @task(1)
    def large_b64(self) -> None:
        self.client.post(
            "/v1/models/big/forward", data=LARGE_B64_BODY, headers=JSON, name="64→128 L=50 N=32 b64"
        )

    @tag("stream")
    @task(4)
    def stream_chunk(self) -> None:
        if self.session is None or random.random() < 0.02:  # streams of ~50 chunks
            r = self.client.post(
                "/v1/models/default/sessions", data="{}", headers=JSON, name="open session"
            )
            self.session = r.json()["session_id"] if r.status_code == 201 else None
            return
        self.client.post(
            f"/v1/sessions/{self.session}/forward",
            data=CHUNK_BODY,
            headers=JSON,
            name="session chunk",
        )

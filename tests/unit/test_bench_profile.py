"""The benchmark's stage split of a py-spy profile: each sample goes to the stage of its
innermost frame that names one, the engine thread's to the worker (its wait to the hand-off)."""

from __future__ import annotations

import pytest

from bench.profile import STAGES, summarize

MAIN = "thread (1): MainThread;Runner.run (asyncio/runners.py:118)"
EDGE = f"{MAIN};App.__call__ (service/app.py:80);Edge._serve (service/api/edge.py:206)"
RAW = "\n".join(
    [
        f"{MAIN};TimedHttpToolsProtocol.data_received (service/httpproto.py:104) 10",
        f"{EDGE};forward_model (service/api/v1.py:60);DataPlane.infer (service/dataplane.py:161);"
        "loads_forward (service/codecs/fastjson.py:81);_amax (numpy/_core/_methods.py:41) 20",
        f"{EDGE};forward_model (service/api/v1.py:60);DataPlane.infer (service/dataplane.py:161) 5",
        f"{EDGE} 5",
        f"{EDGE};Batcher.submit (service/engine/batcher.py:116) 5",
        f"{EDGE};MutexValue.inc (prometheus_client/values.py:28) 5",
        "thread (2): rnn-engine;Thread.run (threading.py:982);_run (service/engine/worker.py:40);"
        "RNN.forward (torch/nn/modules/rnn.py:745) 40",
        "thread (2): rnn-engine;Thread.run (threading.py:982);Worker._serve (service/engine/worker.py:70) 5",
        "thread (3): rnn-access-log;AccessLog._run (service/logs.py:105) 5",
        "thread (1): MainThread 0",
        "garbage",
    ]
)


def test_samples_go_to_their_stages() -> None:
    shares = summarize(RAW)
    assert list(shares) == list(STAGES)
    assert sum(shares.values()) == pytest.approx(1.0)
    expected = {"HTTP": 10, "codec": 20, "admission": 5, "edge": 5, "queue hand-off": 10,
                "metrics and logs": 10, "worker": 40, "other": 0}  # fmt: skip
    assert shares == pytest.approx({k: v / 100 for k, v in expected.items()})


def test_an_empty_profile_has_no_shares() -> None:
    assert set(summarize("").values()) == {0.0}

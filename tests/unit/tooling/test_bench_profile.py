"""The benchmark's stage split of a py-spy profile: each sample goes to the stage of its
innermost frame that names one, the engine thread's to the worker (its wait to the hand-off)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import profile
from bench.profile import STAGES, summarize

MAIN = "thread (1): MainThread;Runner.run (asyncio/runners.py:118)"
EDGE = f"{MAIN};App.__call__ (service/app.py:80);Edge._serve (service/http/edge.py:206)"
RAW = "\n".join(
    [
        f"{MAIN};TimedHttpToolsProtocol.data_received (service/http/protocol.py:104) 10",
        f"{EDGE};forward_model (service/http/v1.py:60);DataPlane.infer (service/dataplane/plane.py:161);"
        "loads_forward (service/codecs/fastjson.py:81);_amax (numpy/_core/_methods.py:41) 20",
        f"{EDGE};forward_model (service/http/v1.py:60);DataPlane.infer (service/dataplane/plane.py:161) 5",
        f"{EDGE} 5",
        f"{EDGE};Batcher.submit (service/engine/batcher.py:116) 5",
        f"{EDGE};MutexValue.inc (prometheus_client/values.py:28) 5",
        "thread (2): rnn-engine;Thread.run (threading.py:982);_run (service/engine/worker.py:40);"
        "RNN.forward (torch/nn/modules/rnn.py:745) 40",
        "thread (2): rnn-engine;Thread.run (threading.py:982);Worker._serve (service/engine/worker.py:70) 5",
        "thread (3): rnn-access-log;AccessLog._run (service/core/logs.py:105) 5",
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


def test_the_overhead_plot_draws_every_scenario_readably(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """overhead.png from made-up figures: a panel a scenario, three a row (its labels read at a
    page's width), whatever the number of scenarios."""
    from PIL import Image

    from bench import report, run
    from bench.harness import Result

    monkeypatch.setattr(report, "OUT", tmp_path)
    c = run.SWEEP[-1]
    results = [
        Result(s.name, target, c, 100.0, 1.0, 2.0, 3.0, 0, cpu_ms=0.3, forward_us=8.0)
        for s in run.SCENARIOS
        for target in ("rnn-serve", "bare")
    ]
    codecs = {s.name: (50.0, 20.0) for s in run.SCENARIOS}
    shares = {stage: 1 / len(profile.STAGES) for stage in profile.STAGES}
    report.plot_overhead(results, codecs, {s.name: shares for s in run.SCENARIOS})
    with Image.open(tmp_path / "overhead.png") as image:
        width, height = image.size
    assert width < 1300, width  # three panels across, not all of them in one row
    assert height > width * 0.6, (width, height)

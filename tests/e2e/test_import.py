"""`rnn-serve models import`: the state_dict a user's training wrote (torch.save or safetensors),
its config told from its tensors' shapes, served by a real server and equal to the module's own
forward; what the file cannot say is asked for; a pickle that is not a state_dict is refused and
nothing in it runs. The command's `main` runs in the test's process (`tests/support/cli.py`):
the entry point itself is the command line's tests' concern."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.support.cli import run_here
from tests.support.helpers import decode
from tests.support.models import Net

pytestmark = pytest.mark.e2e

MODELS: dict[str, tuple[dict[str, Any], tuple[str, str, str], list[str]]] = {
    "char-lstm": ({"mode": "LSTM", "input_size": 5, "hidden_size": 8, "num_layers": 2,
                   "embedding": {"num_embeddings": 20}, "head": {"out_features": 20}},
                  ("embedding", "lstm", "decoder"), ["--activation", "none", "--on", "every_step"]),
    "forecaster": ({"mode": "LSTM", "input_size": 3, "hidden_size": 6, "batch_first": True,
                    "proj_size": 4, "head": {"out_features": 1, "on": "last_step"}},
                   ("", "lstm", "linear"),
                   ["--activation", "none", "--on", "last_step", "--batch-first"]),
    "kws": ({"mode": "GRU", "input_size": 4, "hidden_size": 6, "bidirectional": True,
             "head": {"out_features": 3, "activation": "softmax"}},
            ("", "gru", "fc"), ["--activation", "softmax", "--on", "every_step"]),
}  # fmt: skip


def trained(config: dict[str, Any], names: tuple[str, str, str]) -> Net:
    torch.manual_seed(1)
    return Net(config, names).eval()


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("fmt", ["torch.save", "safetensors"])
def test_a_trained_model_is_imported_and_served_as_it_computes(
    live_server: str, tmp_path: Path, kind: str, fmt: str
) -> None:
    config, names, flags = MODELS[kind]
    net = trained(config, names)
    path = tmp_path / ("model.pt" if fmt == "torch.save" else "model.safetensors")
    if fmt == "torch.save":
        torch.save(net.state_dict(), path)
    else:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    name = f"{kind}-{fmt.replace('.', '')}"
    out = run_here("models", "--url", live_server, "import", str(path), "--name", name, *flags)
    assert out.returncode == 0, out.stderr
    served = httpx.get(f"{live_server}/v1/models/{name}").json()["config"]
    for key, value in config.items():  # told from the shapes, or as asked
        if isinstance(value, dict):
            assert {**served[key], **value} == served[key], (key, served[key])
        else:
            assert served[key] == value, key
    rng = np.random.default_rng(0)
    if "embedding" in config:
        x = torch.from_numpy(rng.integers(0, 20, (7, 2)))
        body: dict[str, Any] = {"input": x.tolist()}
    else:
        shape = (
            (2, 7, config["input_size"])
            if config.get("batch_first")
            else (7, 2, config["input_size"])
        )
        x = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
        body = {"input": x.tolist()}
    r = httpx.post(f"{live_server}/v1/models/{name}/forward", json=body, timeout=30)
    assert r.status_code == 200, r.text
    with torch.no_grad():
        output, _, y = net(x)
    activation = config["head"].get("activation", "none")
    got = r.json()["logits" if activation == "none" else activation]
    np.testing.assert_allclose(decode(got), y.numpy(), atol=1e-5)
    np.testing.assert_allclose(decode(r.json()["output"]), output.numpy(), atol=1e-5)


def test_what_the_file_cannot_say_is_asked_for(live_server: str, tmp_path: Path) -> None:
    config, names, _ = MODELS["kws"]
    path = tmp_path / "kws.pt"
    torch.save(trained(config, names).state_dict(), path)
    out = run_here("models", "--url", live_server, "import", str(path), "--name", "asked")
    assert out.returncode == 1
    assert "the head's activation" in out.stderr
    assert "--activation" in out.stderr
    rnn = tmp_path / "rnn.pt"
    torch.save(torch.nn.RNN(3, 4).state_dict(), rnn)
    out = run_here("models", "--url", live_server, "import", str(rnn), "--name", "asked")
    assert out.returncode == 1
    assert "--nonlinearity" in out.stderr
    out = run_here("models", "--url", live_server, "import", str(rnn), "--name", "plain-rnn",
              "--nonlinearity", "relu")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (
        httpx.get(f"{live_server}/v1/models/plain-rnn").json()["config"]["nonlinearity"] == "relu"
    )


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("what", ["a code payload", "a whole module", "not a dict"])
def test_a_pickle_that_is_not_a_state_dict_is_refused_and_nothing_runs(
    live_server: str, tmp_path: Path, what: str
) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "model.pt"
    if what == "a code payload":
        path.write_bytes(pickle.dumps({"weight_ih_l0": _Payload(marker)}))
    elif what == "a whole module":
        torch.save(torch.nn.GRU(3, 4), path)
    else:
        torch.save([torch.zeros(2)], path)
    out = run_here("models", "--url", live_server, "import", str(path), "--name", "evil")
    assert out.returncode != 0
    assert "state_dict" in out.stderr
    assert "Traceback" not in out.stderr
    assert not marker.exists()
    assert httpx.get(f"{live_server}/v1/models/evil").status_code == 404
    assert json.loads(httpx.get(f"{live_server}/readyz").text)

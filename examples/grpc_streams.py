"""Stream several sequences on one gRPC stream with tritonclient's asyncio client, and check that
every answer is what torch computes for the whole sequence.

    python examples/grpc_streams.py --grpc 127.0.0.1:8001 --url http://127.0.0.1:8000

Each sequence is a stream of chunks (a few time steps each) that arrive interleaved with the
other sequences' chunks, as sensor readings or audio frames from many sources would. The server
keeps each sequence's state between its chunks (`sequence_start` opens it, `sequence_end` ends
it); the answers are matched to their requests by the `id` each echoes. The model's weights are
fetched from the server (`GET /v1/models/{name}/weights`, a safetensors file) to run torch on
the same sequences for the check.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import warnings
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import torch
from safetensors.torch import load

with warnings.catch_warnings():  # (gevent's import-time deprecation notices)
    warnings.simplefilter("ignore")
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as aioclient


def torch_twin(url: str, model: str) -> torch.nn.RNNBase:
    """The served model as a torch module: its config and weights, from the v1 API."""
    config = httpx.get(f"{url}/v1/models/{model}", timeout=30).json()["config"]
    weights = load(httpx.get(f"{url}/v1/models/{model}/weights", timeout=30).content)
    kinds = {"RNN": torch.nn.RNN, "LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}
    kwargs = {k: config[k] for k in ("input_size", "hidden_size", "num_layers", "bias")}
    if config["mode"] == "RNN":
        kwargs["nonlinearity"] = config["nonlinearity"]
    module: torch.nn.RNNBase = kinds[config["mode"]](**kwargs)
    module.load_state_dict(weights)
    return module.eval()


async def stream(
    target: str, model: str, chunks: dict[int, list[np.ndarray]]
) -> dict[str, np.ndarray]:
    """Every sequence's chunks on one stream, interleaved; the answers by request id."""
    client = aioclient.InferenceServerClient(target)
    rounds = max(len(xs) for xs in chunks.values())
    expected = sum(len(xs) for xs in chunks.values())

    async def requests() -> AsyncIterator[dict[str, Any]]:
        for k in range(rounds):
            for s, xs in chunks.items():
                if k < len(xs):
                    item = grpcclient.InferInput("input", list(xs[k].shape), "FP32")
                    item.set_data_from_numpy(xs[k])
                    yield {
                        "model_name": model, "inputs": [item], "request_id": f"{s}/{k}",
                        "sequence_id": s, "sequence_start": k == 0,
                        "sequence_end": k == len(xs) - 1,
                    }  # fmt: skip

    answers: dict[str, np.ndarray] = {}
    try:
        async for result, error in client.stream_infer(requests()):
            if error is not None:
                raise SystemExit(f"a request failed: {error}")
            answers[result.get_response().id] = result.as_numpy("output")
            if len(answers) == expected:
                break
    finally:
        await client.close()
    return answers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grpc", default="127.0.0.1:8001", help="the server's gRPC address")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="its HTTP address")
    parser.add_argument("--model", default="default")
    parser.add_argument("--sequences", type=int, default=8)
    args = parser.parse_args(argv)

    twin = torch_twin(args.url, args.model)
    rng = np.random.default_rng(0)
    chunks = {
        s: [rng.standard_normal((int(rng.integers(1, 6)), 1, twin.input_size)).astype(np.float32)
            for _ in range(int(rng.integers(3, 7)))]
        for s in range(1, args.sequences + 1)
    }  # fmt: skip
    answers = asyncio.run(stream(args.grpc, args.model, chunks))
    worst = 0.0
    for s, xs in chunks.items():
        served = np.concatenate([answers[f"{s}/{k}"] for k in range(len(xs))])
        with torch.inference_mode():
            want = twin(torch.from_numpy(np.concatenate(xs)))[0].numpy()
        worst = max(worst, float(np.abs(served - want).max()))
    steps = sum(x.shape[0] for xs in chunks.values() for x in xs)
    print(f"{len(chunks)} sequences, {len(answers)} chunks, {steps} time steps on one stream; "
          f"largest difference from torch: {worst:.2e}")  # fmt: skip
    if worst > 1e-5:
        print("FAIL: the answers differ from torch")
        return 1
    print("OK: every sequence is what torch computes over its whole input")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train an nn.RNN outside the service, upload it, and check the service serves exactly it.

    python examples/train_and_serve.py --url http://127.0.0.1:8000 --seconds 5

The task: next-step prediction of noisy sine waves. The RNN (1 -> 32, 2 layers) is what rnn-serve
serves; the small linear head that turns hidden states into predictions stays with the client.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import httpx
import numpy as np
import torch
from safetensors.torch import save

from service.client import b64_tensor, from_b64_tensor

CONFIG = {"input_size": 1, "hidden_size": 32, "num_layers": 2}


def batch(n: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """(length + 1, n, 1) noisy sines with random frequency and phase."""
    t = torch.arange(length + 1, dtype=torch.float32)[:, None]
    freq = 0.1 + 0.3 * torch.rand(1, n, generator=gen)
    phase = 2 * math.pi * torch.rand(1, n, generator=gen)
    noise = 0.05 * torch.randn(length + 1, n, generator=gen)
    return (torch.sin(freq * t + phase) + noise)[..., None]


def train(seconds: float) -> tuple[torch.nn.RNN, torch.nn.Linear, float]:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    rnn = torch.nn.RNN(**CONFIG)
    head = torch.nn.Linear(CONFIG["hidden_size"], 1)
    opt = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=3e-3)
    deadline, loss = time.monotonic() + seconds, torch.tensor(0.0)
    while time.monotonic() < deadline:
        seq = batch(64, 40, gen)
        out, _ = rnn(seq[:-1])
        loss = torch.nn.functional.mse_loss(head(out), seq[1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return rnn.eval(), head.eval(), loss.item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--name", default="sine")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)

    rnn, head, loss = train(args.seconds)
    print(f"trained for {args.seconds:.0f}s: training MSE {loss:.4f}")

    with httpx.Client(base_url=args.url, timeout=30) as client:
        r = client.post("/v1/models", json={"name": args.name, "config": CONFIG})
        if r.status_code == 409:  # an earlier run left one with another config
            client.delete(f"/v1/models/{args.name}")
            r = client.post("/v1/models", json={"name": args.name, "config": CONFIG})
        r.raise_for_status()
        r = client.put(
            f"/v1/models/{args.name}/weights",
            content=save(rnn.state_dict()),
            headers={"content-type": "application/octet-stream"},
        )
        r.raise_for_status()

        seq = batch(8, 60, torch.Generator().manual_seed(1))
        x = seq[:-1].numpy()
        r = client.post(
            f"/v1/models/{args.name}/forward",
            json={"input": b64_tensor(x), "output_encoding": "b64"},
        )
        r.raise_for_status()
        served = from_b64_tensor(r.json()["output"])

    with torch.inference_mode():
        local, _ = rnn(torch.from_numpy(x))
        prediction = head(torch.from_numpy(served.copy()))
    diff = float(np.abs(served - local.numpy()).max())
    mse = float(torch.nn.functional.mse_loss(prediction, seq[1:]))
    print(f"served vs local output: max |diff| = {diff:.2e}")
    print(f"next-step MSE from the served hidden states: {mse:.4f}")
    if diff > 1e-5:
        print("MISMATCH: the service does not serve the trained model", file=sys.stderr)
        return 1
    print("OK: rnn-serve serves exactly the trained model")
    return 0


if __name__ == "__main__":
    sys.exit(main())

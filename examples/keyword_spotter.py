"""You trained a model; serve it: a streaming keyword spotter (`nn.GRU -> nn.Linear -> softmax` on
every step), end to end, on synthetic audio-like features.

    python examples/keyword_spotter.py --url http://127.0.0.1:8000 --seconds 20

Each sequence is 8 noisy feature channels; now and then one of two "keywords" (a fixed pattern
over 6 frames) is mixed in. The model says, at every frame, whether keyword 1, keyword 2 or
nothing has just ended. It is trained here, saved with `torch.save(model.state_dict())`,
imported with `rnn-serve models import kws.pt --name kws --activation softmax --on every_step`,
and checked against its own forward: one stateless request, then a session fed frame by frame,
as a microphone would.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from torch import nn

from service.client import b64_tensor, from_b64_tensor
from service.ops import main as models_cli

FEATURES, FRAMES = 8, 6
PATTERNS = torch.Generator().manual_seed(7)
KEYWORDS = torch.randn(2, FRAMES, FEATURES, generator=PATTERNS)


class Spotter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(FEATURES, 32, num_layers=2, batch_first=True)
        self.fc = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)
        return torch.softmax(self.fc(out), dim=-1)


def batch(n: int, length: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, length, FEATURES) noise with keywords mixed in; labels 1 or 2 where one ends, else 0."""
    x = 0.5 * torch.randn(n, length, FEATURES, generator=gen)
    y = torch.zeros(n, length, dtype=torch.int64)
    for i in range(n):
        for at in range(0, length - FRAMES, 3 * FRAMES):
            word = int(torch.randint(0, 3, (1,), generator=gen))
            if word:
                x[i, at : at + FRAMES] += KEYWORDS[word - 1]
                y[i, at + FRAMES - 1] = word
    return x, y


def train(seconds: float, steps: int) -> Spotter:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = Spotter()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    start = time.monotonic()
    for _ in range(steps):
        if time.monotonic() - start > seconds:
            break
        x, y = batch(32, 48, gen)
        probs = model(x)
        loss = nn.functional.nll_loss(torch.log(probs + 1e-9).reshape(-1, 3), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def softmax_of(r: httpx.Response) -> np.ndarray:
    if r.status_code != 200:
        raise SystemExit(f"{r.status_code}: {r.text}")
    return from_b64_tensor(r.json()["softmax"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--name", default="kws")
    p.add_argument("--seconds", type=float, default=20.0, help="training budget")
    p.add_argument("--steps", type=int, default=400, help="at most this many training steps")
    args = p.parse_args(argv)

    model = train(args.seconds, args.steps)
    x, y = batch(1, 60, torch.Generator().manual_seed(99))
    with torch.no_grad():
        want = model(x)[0].numpy()
    hits = int(((want.argmax(-1) == y[0].numpy()) & (y[0].numpy() > 0)).sum())
    print(f"trained: {hits} of {int((y > 0).sum())} keywords spotted on a fresh sequence")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kws.pt"
        torch.save(model.state_dict(), path)
        cli = ["--url", args.url, "import", str(path), "--name", args.name,
               "--activation", "softmax", "--on", "every_step", "--batch-first"]  # fmt: skip
        if models_cli(cli) != 0:
            return 1

    frames = x[0].numpy()  # (60, FEATURES): unbatched
    with httpx.Client(base_url=args.url, timeout=60) as http:
        one = {"input": b64_tensor(frames), "outputs": ["softmax"], "output_encoding": "b64"}
        np.testing.assert_allclose(
            softmax_of(http.post(f"/v1/models/{args.name}/forward", json=one)), want, atol=1e-5
        )
        sid = http.post(f"/v1/models/{args.name}/sessions", json={}).json()["session_id"]
        streamed = []
        for t, frame in enumerate(frames):  # one frame a request, as it arrives
            chunk = {"input": b64_tensor(frame[None]), "start_step": t, "outputs": ["softmax"],
                     "output_encoding": "b64"}  # fmt: skip
            streamed.append(softmax_of(http.post(f"/v1/sessions/{sid}/forward", json=chunk)))
        http.delete(f"/v1/sessions/{sid}")
    np.testing.assert_allclose(np.concatenate(streamed), want, atol=1e-5)
    print("OK: rnn-serve serves the trained model exactly, stateless and streamed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

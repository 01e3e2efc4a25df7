"""You trained a model; serve it: a character-level LSTM language model, end to end.

    python examples/char_lstm.py --url http://127.0.0.1:8000 --seconds 30

1. Train an ordinary `nn.Module` (`nn.Embedding -> nn.LSTM -> nn.Linear`) on the opening of
   *Alice's Adventures in Wonderland* (examples/data/alice.txt, public domain).
2. `torch.save(model.state_dict(), "char-lstm.pt")`, then
   `rnn-serve models import char-lstm.pt --name char-lstm --activation none --on every_step`.
3. Check that the server computes what the module does, in eval mode: one stateless request,
   and a session fed chunk by chunk (the server holds the LSTM's state between them).
4. Sample text client-side from the logits streamed back, one character a request.
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

from service.client import from_b64_tensor
from service.ops import main as models_cli

TEXT = Path(__file__).with_name("data") / "alice.txt"


class CharLSTM(nn.Module):
    def __init__(self, vocab: int, width: int = 16, hidden: int = 64) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, width)
        self.lstm = nn.LSTM(width, hidden)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, ids: torch.Tensor, state: object = None) -> tuple[torch.Tensor, object]:
        out, state = self.lstm(self.embedding(ids), state)
        return self.decoder(out), state


def train(text: str, vocab: list[str], seconds: float, steps: int) -> tuple[CharLSTM, float]:
    """Next-character prediction on random windows, for `seconds` or `steps`, whichever first."""
    torch.manual_seed(0)
    ids = torch.tensor([vocab.index(ch) for ch in text])
    model = CharLSTM(len(vocab))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    loss = torch.tensor(0.0)
    start = time.monotonic()
    for _ in range(steps):
        if time.monotonic() - start > seconds:
            break
        at = torch.randint(0, len(ids) - 65, (32,), generator=gen)
        window = torch.stack([ids[i : i + 65] for i in at.tolist()], dim=1)  # (65, 32)
        logits, _ = model(window[:-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, len(vocab)), window[1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), loss.item()


def answer(r: httpx.Response) -> np.ndarray:
    if r.status_code != 200:
        raise SystemExit(f"{r.status_code}: {r.text}")
    return from_b64_tensor(r.json()["logits"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--name", default="char-lstm")
    p.add_argument("--seconds", type=float, default=30.0, help="training budget")
    p.add_argument("--steps", type=int, default=2000, help="at most this many training steps")
    p.add_argument("--sample", type=int, default=200, help="characters to sample")
    args = p.parse_args(argv)

    text = TEXT.read_text()
    vocab = sorted(set(text))
    model, loss = train(text, vocab, args.seconds, args.steps)
    print(f"trained: {len(vocab)} characters, cross-entropy {loss:.3f}")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "char-lstm.pt"
        torch.save(model.state_dict(), path)
        cli = ["--url", args.url, "import", str(path), "--name", args.name,
               "--activation", "none", "--on", "every_step"]  # fmt: skip
        if models_cli(cli) != 0:
            return 1

    prompt = torch.tensor([vocab.index(ch) for ch in "Alice was beginning to get very tired"])
    with torch.no_grad():
        want, _ = model(prompt)
    with httpx.Client(base_url=args.url, timeout=60) as http:
        # 1. stateless: the whole prompt in one request
        one = {"input": prompt.tolist(), "outputs": ["logits"], "output_encoding": "b64"}
        got = answer(http.post(f"/v1/models/{args.name}/forward", json=one))
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4)
        # 2. a session: the same prompt in chunks of 5 characters
        sid = http.post(f"/v1/models/{args.name}/sessions", json={}).json()["session_id"]
        streamed = []
        for at in range(0, len(prompt), 5):
            chunk = {"input": prompt[at : at + 5].tolist(), "start_step": at,
                     "outputs": ["logits"], "output_encoding": "b64"}  # fmt: skip
            streamed.append(answer(http.post(f"/v1/sessions/{sid}/forward", json=chunk)))
        np.testing.assert_allclose(np.concatenate(streamed), want.numpy(), atol=1e-4)
        # 3. sample: one character a request, the server holding the state
        rng = np.random.default_rng(0)
        logits, out, step = streamed[-1][-1], [], len(prompt)
        for _ in range(args.sample):
            probs = np.exp(logits - logits.max())
            nxt = int(rng.choice(len(vocab), p=probs / probs.sum()))
            out.append(vocab[nxt])
            chunk = {"input": [nxt], "start_step": step, "outputs": ["logits"],
                     "output_encoding": "b64"}  # fmt: skip
            logits, step = (
                answer(http.post(f"/v1/sessions/{sid}/forward", json=chunk))[-1],
                step + 1,
            )
        http.delete(f"/v1/sessions/{sid}")
    print("sampled: Alice was beginning to get very tired" + "".join(out))
    print("OK: rnn-serve serves the trained model exactly, stateless and streamed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

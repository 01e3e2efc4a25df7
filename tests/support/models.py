"""The models users train, as ordinary `nn.Module`s written the usual way: an embedding, a
recurrent core and a linear head, with their own `forward`. The tests compare the server with
these (eval mode), and upload their `state_dict()`s under the names they give."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from tests.oracle import _core_after_seed, full_config

ACTIVATIONS: dict[str, Any] = {
    "none": lambda y: y,
    "softmax": lambda y: torch.softmax(y, dim=-1),
    "log_softmax": lambda y: torch.log_softmax(y, dim=-1),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}


class Net(nn.Module):
    """`embedding -> core -> head` under the names given (`embedding`, `lstm`, `fc` by default),
    each optional but the core; the head reads every step, or each sequence's last valid step."""

    def __init__(
        self, config: dict[str, Any], names: tuple[str, str, str] = ("embedding", "lstm", "fc")
    ) -> None:
        super().__init__()
        c = full_config(config)
        self.c, self.names = c, names
        if c.get("embedding") is not None:
            e = c["embedding"]
            emb = nn.Embedding(
                e["num_embeddings"], c["input_size"], padding_idx=e.get("padding_idx")
            )
            setattr(self, names[0], emb)
        setattr(self, names[1], _core_after_seed(c))
        if c.get("head") is not None:
            dirs = 2 if c["bidirectional"] else 1
            width = dirs * (c["proj_size"] or c["hidden_size"])
            h = c["head"]
            setattr(self, names[2], nn.Linear(width, h["out_features"], bias=h.get("bias", True)))

    def part(self, i: int) -> Any:
        return getattr(self, self.names[i], None)

    def forward(
        self, x: torch.Tensor, hx: Any = None, lengths: list[int] | None = None
    ) -> tuple[torch.Tensor, Any, torch.Tensor | None]:
        c = self.c
        embedding, core, head = self.part(0), self.part(1), self.part(2)
        if embedding is not None:
            x = embedding(x)
        bf = c["batch_first"]
        if lengths is not None:
            packed = pack_padded_sequence(
                x, torch.tensor(lengths), batch_first=bf, enforce_sorted=False
            )
            out, h_n = core(packed, hx)
            out, _ = pad_packed_sequence(out, batch_first=bf, total_length=x.shape[1 if bf else 0])
        else:
            out, h_n = core(x, hx)
        if head is None:
            return out, h_n, None
        spec = c["head"]
        picked = out
        if spec.get("on", "every_step") == "last_step":
            if out.dim() == 2:
                picked = out[-1]
            else:
                n = out.shape[0 if bf else 1]
                steps = out.shape[1 if bf else 0]
                last = (
                    torch.tensor(lengths) - 1
                    if lengths is not None
                    else torch.full((n,), steps - 1)
                )
                rows = torch.arange(n)
                picked = out[rows, last] if bf else out[last, rows]
        return out, h_n, ACTIVATIONS[spec.get("activation", "none")](head(picked))


def seeded_net(
    config: dict[str, Any], names: tuple[str, str, str] = ("embedding", "lstm", "fc")
) -> Net:
    """The seeded model the server builds for `config`, as a `Net` (the same draws, in order)."""
    torch.manual_seed(full_config(config)["seed"])
    return Net(config, names).eval()

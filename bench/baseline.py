"""The comparison point: a plain hand-written FastAPI endpoint, as most teams would first write it.

Pydantic nested lists in, one forward per request (a sync endpoint, so FastAPI runs it in its
thread pool), FastAPI's default JSON response out. Also `/bare`: an endpoint that only reads the
body and returns a fixed answer, the ceiling for any JSON-over-HTTP service on this machine.

    uvicorn bench.baseline:app --loop uvloop --http httptools
"""

from __future__ import annotations

import torch
from fastapi import FastAPI, Request, Response
from pydantic import BaseModel

MODELS = {"seed": (10, 20, 2), "big": (64, 128, 2), "large": (256, 512, 2)}
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _build(sizes: tuple[int, int, int]) -> torch.nn.RNN:
    torch.manual_seed(0)
    return torch.nn.RNN(*sizes).to(DEVICE).eval()


app = FastAPI()
modules = {name: _build(sizes) for name, sizes in MODELS.items()}


class ForwardIn(BaseModel):
    input: list[list[list[float]]]
    h0: list[list[list[float]]] | None = None


@app.post("/forward/{name}")
def forward(name: str, req: ForwardIn) -> dict[str, object]:
    x = torch.tensor(req.input, device=DEVICE)
    h0 = torch.tensor(req.h0, device=DEVICE) if req.h0 is not None else None
    with torch.no_grad():
        out, hn = modules[name](x, h0)
    out, hn = out.cpu(), hn.cpu()
    return {
        "output": out.tolist(),
        "h_n": hn.tolist(),
        "output_shape": list(out.shape),
        "h_n_shape": list(hn.shape),
    }


_FIXED = b'{"output": [], "h_n": []}'


@app.post("/bare")
async def bare(request: Request) -> Response:
    await request.body()
    return Response(_FIXED, media_type="application/json")

"""A Python client for rnn-serve, sync (`Client`) and async (`AsyncClient`), on httpx.

Its own distribution (`pip install ./clients/python`): httpx, numpy and tenacity only; torch
tensors work when torch is installed, and are never needed.

    from rnn_serve_client import Client
    with Client("http://127.0.0.1:8000", api_key="...") as rnn:   # api_key: if the server has keys
        output, h_n = rnn.forward("default", x, h0)      # numpy in -> numpy out, torch -> torch
        output, (h_n, c_n) = rnn.forward("my-lstm", x, (h0, c0))   # LSTMs, as torch returns them

Forwards use the Open Inference Protocol's binary tensor extension by default (raw bytes, no
JSON numbers either way). Connection errors and 429/503 answers are retried (tenacity) with
exponential backoff and jitter, honouring Retry-After; errors raise typed exceptions carrying the
server's detail. `live()`, `ready()`, `server_metadata()` and `model_metadata()` ask the server
about itself; `api_key=` and `headers=` go with every call.

Streaming sessions (the server holds the state between chunks):

    with rnn.open_session("default") as s:            # or hx=h0, batch_size=N, state=exported
        out1, h1 = s.forward(x[:10])                   # exactly once, retried safely
        saved = s.export()                             # safetensors bytes: keep it somewhere
        branch = s.fork()                              # a copy of the state, its own stream
    s2 = rnn.open_session("default", state=saved)      # resumes at the exported step

Each chunk carries the step it expects to start at (`start_step`), so a chunk whose answer was
lost (a timeout, a connection reset, a replica that stopped) is resent and applied once: the
server answers a resent chunk from the answer it kept. A session whose replica was killed
raises `SessionLost` (410): resume it from a state you exported. OIP sequences:
`rnn.sequence("default", "my-id")` streams over the Open Inference Protocol with the same retries.
"""

from __future__ import annotations

from rnn_serve_client._async import AsyncClient, AsyncSequence, AsyncSession
from rnn_serve_client._errors import (
    BadRequest,
    Conflict,
    NotFound,
    Overloaded,
    RNNServeError,
    ServerError,
    SessionLost,
    StepConflict,
    Unauthorized,
)
from rnn_serve_client._sync import Client, Sequence, Session
from rnn_serve_client._wire import b64_tensor, from_b64_tensor

__all__ = [
    "AsyncClient",
    "AsyncSequence",
    "AsyncSession",
    "BadRequest",
    "Client",
    "Conflict",
    "NotFound",
    "Overloaded",
    "RNNServeError",
    "Sequence",
    "ServerError",
    "Session",
    "SessionLost",
    "StepConflict",
    "Unauthorized",
    "b64_tensor",
    "from_b64_tensor",
]

"""Stream a session over a WebSocket with the `websockets` client, drop the connection, resume.

    python examples/ws_stream.py --url http://127.0.0.1:8000 [--api-key KEY]

Chunks go as binary frames (a fixed header and the raw float32 values: see docs/websocket.md)
and come back the same way. Midway the connection is dropped; the client reconnects to
/v1/sessions/{id}/stream, reads the session's `steps` from the server's first frame, and goes on
from its last answered step. The outputs are checked against torch's own nn.RNN.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys

import numpy as np
import torch
from websockets.sync.client import connect

HEADER = struct.Struct("<4sqBBH")  # magic, step, dtype (0: float32), ndim, reserved


def frame(x: np.ndarray, step: int) -> bytes:
    x = np.ascontiguousarray(x, dtype="<f4")
    return (
        HEADER.pack(b"RNS1", step, 0, x.ndim, 0)
        + struct.pack(f"<{x.ndim}I", *x.shape)
        + x.tobytes()
    )


def values(data: bytes) -> tuple[int, np.ndarray]:
    _, step, _, ndim, _ = HEADER.unpack_from(data)
    shape = struct.unpack_from(f"<{ndim}I", data, HEADER.size)
    return step, np.frombuffer(data, "<f4", offset=HEADER.size + 4 * ndim).reshape(shape)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--api-key")
    p.add_argument("--steps", type=int, default=40)
    args = p.parse_args(argv)
    ws_url = args.url.replace("http", "ws", 1)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else None
    x = np.random.default_rng(0).standard_normal((args.steps, 10)).astype(np.float32)

    outputs: list[np.ndarray] = []
    answered = 0  # the last step the server answered: where a reconnect goes on from
    with connect(f"{ws_url}/v1/models/default/stream", additional_headers=headers) as ws:
        session = json.loads(ws.recv())
        for t in range(0, args.steps // 2, 2):
            ws.send(frame(x[t : t + 2], t))
            answered, out = values(ws.recv())  # type: ignore[arg-type]
            outputs.append(out)
    print(f"dropped the connection at step {answered} of session {session['session_id']}")
    with connect(
        f"{ws_url}/v1/sessions/{session['session_id']}/stream", additional_headers=headers
    ) as ws:
        assert json.loads(ws.recv())["steps"] == answered  # the server is where the client is
        for t in range(answered, args.steps, 2):
            ws.send(frame(x[t : t + 2], t))
            answered, out = values(ws.recv())  # type: ignore[arg-type]
            outputs.append(out)

    torch.manual_seed(0)  # the default model: seed 0, nn.RNN(10, 20, 2)
    with torch.no_grad():
        want, _ = torch.nn.RNN(10, 20, 2)(torch.from_numpy(x))
    np.testing.assert_allclose(np.concatenate(outputs), want.numpy(), atol=1e-5)
    print(f"OK: {answered} steps streamed over two connections, exactly torch's output")
    return 0


if __name__ == "__main__":
    sys.exit(main())

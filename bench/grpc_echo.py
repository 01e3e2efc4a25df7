"""The gRPC floor: a bare grpc.aio server (uvloop, as rnn-serve runs) that answers every
`ModelStreamInfer` message with one fixed `ModelStreamInferResponse`, and does nothing else.

    python -m bench.grpc_echo PORT

`python -m bench.capacity --modes grpc-floor` ramps its streams against it with the same
generator as the grpc modes: what a stream message costs before any rnn-serve code runs.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import uvloop

# ModelStreamInferResponse{infer_response: ModelInferResponse{model_name: "default"}}, by hand
ANSWER = b"\x12\x09\x0a\x07default"


async def _echo(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for _ in requests:
        yield ANSWER


async def main(port: int) -> None:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {"ModelStreamInfer": grpc.stream_stream_rpc_method_handler(_echo)},
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))

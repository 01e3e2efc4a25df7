"""The capacity bench's gRPC generator writes what the protocol says: its hand-serialized
requests are the ModelInferRequest the server reads, and the floor's fixed reply is an answer."""

from __future__ import annotations

import numpy as np

from bench.capacity import STEPS, grpc_chunk
from bench.grpc_echo import ANSWER
from service.codecs import messages as m
from service.codecs.oip_grpc import GrpcInfer, parameters
from service.core.schemas.config import RNNConfig


def test_a_chunk_is_the_request_the_server_reads() -> None:
    x = np.random.default_rng(0).standard_normal((STEPS, 1, 10)).astype(np.float32)
    first = m.ModelInferRequest.FromString(grpc_chunk(x.tobytes(), 300, 0))
    later = m.ModelInferRequest.FromString(grpc_chunk(x.tobytes(), 300, 4))
    assert first.model_name == "default"
    assert parameters(first.parameters) == {"sequence_id": 300, "start_step": 0,
                                            "sequence_start": True}  # fmt: skip
    assert parameters(later.parameters) == {"sequence_id": 300, "start_step": 4 * STEPS}
    decoded = GrpcInfer(later).decode(RNNConfig(input_size=10, hidden_size=20), 1 << 20)
    np.testing.assert_array_equal(decoded.inputs.input.array, x)
    assert decoded.start_step == 4 * STEPS


def test_the_floor_answers_an_answer() -> None:
    reply = m.ModelStreamInferResponse.FromString(ANSWER)
    assert reply.infer_response.model_name == "default"
    assert not reply.error_message

"""The OIP gRPC codec: Triton's messages in, the same Decoded as OIP over HTTP, raw outputs out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.catalog.spec import ModelSpec
from service.codecs import messages as m
from service.codecs.oip import OIPInfer
from service.codecs.oip_grpc import GrpcInfer, parameters, stream_answer, stream_error
from service.codecs.pipeline import Served
from service.core.errors import InvalidInput, described
from service.core.schemas.config import RNNConfig
from service.engine.backend import SessionView
from service.engine.job import ForwardResult

CONFIG = RNNConfig(input_size=3, hidden_size=4, num_layers=1)
LSTM = RNNConfig(mode="LSTM", input_size=3, hidden_size=4)
PROTOS = Path(__file__).resolve().parents[3] / "service" / "codecs" / "protos"


def _request(x: np.ndarray, raw: bool = True, **params: object) -> object:
    req = m.ModelInferRequest(model_name="default", id="r1")
    tensor = req.inputs.add(name="input", datatype="FP32", shape=x.shape)
    if raw:
        req.raw_input_contents.append(x.astype("<f4").tobytes())
    else:
        tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())
    for name, value in params.items():
        param = req.parameters[name]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            param.int64_param = value
        else:
            param.string_param = str(value)
    return req


@pytest.mark.parametrize("raw", [True, False])
def test_raw_and_typed_contents_decode_alike(raw: bool) -> None:
    x = np.arange(12, dtype=np.float32).reshape(2, 2, 3) / 7
    decoded = GrpcInfer(_request(x, raw)).decode(CONFIG, 1000)
    np.testing.assert_array_equal(decoded.inputs.input.array, x)
    assert decoded.sequence is None


def test_the_same_sequence_rules_as_http() -> None:
    x = np.zeros((1, 1, 3), np.float32)
    numeric = GrpcInfer(_request(x, sequence_id=7, sequence_start=True)).decode(CONFIG, 1000)
    assert numeric.sequence is not None
    assert (numeric.sequence.id, numeric.sequence.numeric, numeric.sequence.start) == (
        "7",
        True,
        True,
    )
    text = GrpcInfer(_request(x, sequence_id="7")).decode(CONFIG, 1000)
    assert text.sequence is not None
    assert not text.sequence.numeric
    body = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1,3],"data":[0,0,0]}],' \
           b'"parameters":{"sequence_id":7,"sequence_start":true}}'  # fmt: skip
    assert OIPInfer(body, None).decode(CONFIG, 1000).sequence == numeric.sequence
    with pytest.raises(InvalidInput) as negative:
        GrpcInfer(_request(x, sequence_id=-3)).decode(CONFIG, 1000)
    assert (
        described(negative.value) == "parameters.sequence_id: expected a uint64 or a string, got -3"
    )
    with pytest.raises(InvalidInput, match="need a sequence_id"):
        GrpcInfer(_request(x, sequence_end=True)).decode(CONFIG, 1000)
    assert GrpcInfer(_request(x, sequence_id=7)).sequence_key == ("default", 7)
    assert GrpcInfer(_request(x, sequence_id=0)).sequence_key is None


def test_parameters_are_plain_values() -> None:
    req = m.ModelInferRequest()
    req.parameters["a"].bool_param = True
    req.parameters["b"].uint64_param = 1 << 63
    req.parameters["c"].double_param = 0.5
    req.parameters["d"].CopyFrom(m.InferParameter())
    assert parameters(req.parameters) == {"a": True, "b": 1 << 63, "c": 0.5, "d": None}


def test_bad_contents_name_the_field() -> None:
    x = np.zeros((2, 1, 3), np.float32)
    req = _request(x)
    req.raw_input_contents[0] = b"\0" * 23  # type: ignore[attr-defined]
    with pytest.raises(InvalidInput) as short:
        GrpcInfer(req).decode(CONFIG, 1000)
    assert (
        described(short.value)
        == "inputs.0.raw_input_contents: shape [2, 1, 3] of FP32 needs 24 bytes, got 23"
    )
    req = _request(x)
    req.raw_input_contents.append(b"")  # type: ignore[attr-defined]
    with pytest.raises(InvalidInput, match="one entry for each of the 1 inputs, got 2"):
        GrpcInfer(req).decode(CONFIG, 1000)
    req = _request(x, raw=False)
    req.inputs[0].contents.fp32_contents.append(1.0)  # type: ignore[attr-defined]
    with pytest.raises(InvalidInput, match="needs 6 values, got 7"):
        GrpcInfer(req).decode(CONFIG, 1000)
    req = _request(x, raw=False)
    req.inputs[0].datatype = "FP16"  # type: ignore[attr-defined]
    with pytest.raises(InvalidInput, match="FP16 values have no typed contents field"):
        GrpcInfer(req).decode(CONFIG, 1000)
    req = _request(np.full((1, 1, 3), np.inf, np.float32))
    with pytest.raises(InvalidInput, match="NaN or infinity"):
        GrpcInfer(req).decode(CONFIG, 1000)
    req = _request(np.full((1, 1, 3), 1e300), raw=False)
    with pytest.raises(InvalidInput, match="range"):
        GrpcInfer(req).decode(CONFIG, 1000)


def test_answers_are_raw_outputs_in_the_order_asked() -> None:
    x = np.zeros((2, 1, 3), np.float32)
    req = _request(x)
    req.outputs.add(name="c_n")  # type: ignore[attr-defined]
    req.outputs.add(name="output")  # type: ignore[attr-defined]
    out = np.arange(8, dtype=np.float32).reshape(2, 1, 4)
    cn = np.ones((1, 1, 4), np.float32)
    result = ForwardResult(out, cn * 2, cn)
    view = SessionView("s", "lstm", 5, 1, 0.0)
    encoded = GrpcInfer(req).encode(Served(ModelSpec("lstm", LSTM, None), result, "cpu", view))
    answer = m.ModelInferResponse.FromString(encoded.body)
    assert answer.id == "r1"
    assert [(o.name, list(o.shape), o.datatype) for o in answer.outputs] == [
        ("c_n", [1, 1, 4], "FP32"), ("output", [2, 1, 4], "FP32")]  # fmt: skip
    assert answer.raw_output_contents[1] == out.tobytes()
    assert answer.parameters["sequence_steps"].int64_param == 5


def test_stream_messages_are_framed_as_the_protocol_says() -> None:
    inner = m.ModelInferResponse(id="x", model_name="default")
    inner.raw_output_contents.append(b"\1" * 1000)
    framed = m.ModelStreamInferResponse.FromString(stream_answer(inner.SerializeToString()))
    assert framed.infer_response == inner
    assert not framed.error_message
    error = m.ModelStreamInferResponse.FromString(
        stream_error("bad ü", _request(np.zeros((1, 1, 3))))
    )
    assert error.error_message == "bad ü"
    assert error.infer_response.id == "r1"


def test_the_descriptor_set_is_compiled_from_the_vendored_protos(tmp_path: Path) -> None:
    """protos/triton.binpb is what `make protos` makes of the .proto files beside it."""
    out = tmp_path / "triton.binpb"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(PROTOS), "--include_imports",
         f"--descriptor_set_out={out}", "grpc_service.proto"],
        check=True, cwd=PROTOS,
    )  # fmt: skip
    assert out.read_bytes() == (PROTOS / "triton.binpb").read_bytes(), "run make protos"


LAYERED = RNNConfig.model_validate(
    {"mode": "GRU", "input_size": 3, "hidden_size": 4, "embedding": {"num_embeddings": 9},
     "head": {"out_features": 2, "activation": "sigmoid", "on": "last_step"}}
)  # fmt: skip


@pytest.mark.parametrize("raw", [True, False])
def test_token_ids_come_as_int64_and_the_head_answers_alone(raw: bool) -> None:
    ids = np.array([[1, 2], [3, 8]], dtype=np.int64)
    req = m.ModelInferRequest(model_name="kws", id="r2")
    tensor = req.inputs.add(name="input", datatype="INT64", shape=ids.shape)
    if raw:
        req.raw_input_contents.append(ids.astype("<i8").tobytes())
    else:
        tensor.contents.int64_contents.extend(ids.reshape(-1).tolist())
    req.outputs.add(name="sigmoid")
    codec = GrpcInfer(req)
    decoded = codec.decode(LAYERED, 1000)
    assert decoded.inputs.input.dtype == "int64"
    np.testing.assert_array_equal(decoded.inputs.input.array, ids)
    head = np.full((2, 2), 0.5, np.float32)
    result = ForwardResult(np.zeros((2, 2, 4), np.float32), np.zeros((1, 2, 4), np.float32),
                           head=head)  # fmt: skip
    answer = m.ModelInferResponse.FromString(
        codec.encode(Served(ModelSpec("kws", LAYERED, None), result, "cpu")).body
    )
    assert [(o.name, list(o.shape)) for o in answer.outputs] == [("sigmoid", [2, 2])]
    np.testing.assert_array_equal(np.frombuffer(answer.raw_output_contents[0], "<f4"), 0.5)

"""The Open Inference Protocol over gRPC (Triton's `ModelInferRequest` / `ModelInferResponse`).

The same tensors, parameters and checks as OIP over HTTP (`service.codecs.oip.decode_request`):
only the carrier differs. Inputs come as `raw_input_contents` (bytes in input order, what
`tritonclient.grpc` sends; then every input is raw) or as typed `contents` (`fp32_contents`,
`fp64_contents`, `int64_contents`, `int_contents`); FP16 and BF16 have no typed field and come
raw. Outputs are always `raw_output_contents`, as Triton answers them. Parameters are read from
`InferParameter`'s oneof into plain values, so `sequence_id` is a uint64 (`int64_param` or
`uint64_param`) or a string exactly as over HTTP.

An answer is the serialized `ModelInferResponse`: a stream wraps those bytes in a
`ModelStreamInferResponse` by hand (`stream_answer`), with no second copy of the message.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from service.codecs.messages import InferParameter, ModelInferResponse
from service.codecs.oip import VERSION, decode_request
from service.codecs.pipeline import Decoded, Encoded, Served, result_outputs
from service.core.errors import InvalidInput, Loc
from service.core.schemas.config import RNNConfig
from service.core.schemas.oip import TO_OIP

# datatype -> the typed contents field that carries it, and the numbers' NumPy type
_TYPED: dict[str, tuple[str, type[Any]]] = {
    "FP32": ("fp32_contents", np.float64),  # (protobuf hands floats over as Python floats)
    "FP64": ("fp64_contents", np.float64),
    "INT64": ("int64_contents", np.int64),
    "INT32": ("int_contents", np.int64),
}
MEDIA_TYPE = "application/grpc"


def parameters(params: Any) -> dict[str, Any]:
    """A `map<string, InferParameter>` as plain values (bool, int, str, float)."""
    out: dict[str, Any] = {}
    for name, param in params.items():
        kind = param.WhichOneof("parameter_choice")
        out[name] = None if kind is None else getattr(param, kind)
    return out


class GrpcInfer:
    """A `ModelInferRequest`, decoded and answered as the data plane's codec."""

    __slots__ = ("_params", "req")

    def __init__(self, req: Any) -> None:
        self.req = req
        self._params = parameters(req.parameters)

    @property
    def sequence_key(self) -> tuple[str, Any] | None:
        """The request's sequence (its model and id), for ordering requests on a stream; None
        when it is not part of one. Not checked here: `decode` does that."""
        value = self._params.get("sequence_id")
        if value in (None, 0, ""):
            return None
        return (self.req.model_name, value)

    def decode(self, config: RNNConfig, max_elements: int) -> Decoded:
        req = self.req
        raw = req.raw_input_contents
        if raw and len(raw) != len(req.inputs):
            raise InvalidInput.at(
                ("raw_input_contents",),
                f"expected one entry for each of the {len(req.inputs)} inputs, got {len(raw)}",
            )

        def values(i: int, item: Any, np_dtype: np.dtype[Any], loc: Loc) -> tuple[Any, bool]:
            shape = tuple(item.shape)
            count = math.prod(shape)
            if raw:
                data = raw[i]
                need = count * np_dtype.itemsize
                if len(data) != need:
                    raise InvalidInput.at(
                        (*loc, "raw_input_contents"),
                        f"shape {list(shape)} of {item.datatype} needs {need} bytes, "
                        f"got {len(data)}",
                    )
                return np.frombuffer(data, dtype=np_dtype).reshape(shape), False
            typed = _TYPED.get(item.datatype)
            if typed is None:
                raise InvalidInput.at(
                    (*loc, "contents"),
                    f"{item.datatype} values have no typed contents field: send them as "
                    "raw_input_contents",
                )
            field, number = typed
            numbers = getattr(item.contents, field)
            if len(numbers) != count:
                raise InvalidInput.at(
                    (*loc, "contents", field),
                    f"shape {list(shape)} needs {count} values, got {len(numbers)}",
                )
            return np.fromiter(numbers, dtype=number, count=count).reshape(shape), True

        requested = [o.name for o in req.outputs]
        return decode_request(req.inputs, values, requested, self._params, config, max_elements, ())

    def encode(self, served: Served) -> Encoded:
        result, spec = served.result, served.spec
        datatype = TO_OIP[spec.config.dtype]
        answer = ModelInferResponse(model_name=spec.name, model_version=VERSION, id=self.req.id)
        requested = [o.name for o in self.req.outputs] or None
        for name, arr in result_outputs(spec.config, result, requested):
            answer.outputs.add(name=name, datatype=datatype, shape=arr.shape)
            answer.raw_output_contents.append(np.ascontiguousarray(arr).tobytes())
        if served.session is not None:  # a sequence: the steps it has consumed (start_step's)
            answer.parameters["sequence_steps"].CopyFrom(
                InferParameter(int64_param=served.session.steps)
            )
        return Encoded(answer.SerializeToString(), MEDIA_TYPE)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def stream_answer(body: bytes) -> bytes:
    """`ModelStreamInferResponse{infer_response}` around a serialized `ModelInferResponse`
    (field 2, length-delimited)."""
    return b"\x12" + _varint(len(body)) + body


def stream_error(message: str, req: Any = None) -> bytes:
    """`ModelStreamInferResponse{error_message}` (field 1, a string), with the request's `id`
    and model in an otherwise empty `infer_response`, so that a client can tell which request
    failed (tritonclient itself hands only the message to its callback)."""
    data = message.encode()
    out = b"\x0a" + _varint(len(data)) + data
    if req is not None and (req.id or req.model_name):
        which = ModelInferResponse(model_name=req.model_name, id=req.id).SerializeToString()
        out += stream_answer(which)
    return out

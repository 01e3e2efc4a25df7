"""Open Inference Protocol v2 (KServe / Triton) request and response bodies."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, WithJsonSchema
from pydantic.config import JsonDict

from service.core.schemas.config import DType

# OIP datatypes <-> rnn-serve dtypes.
TO_OIP: dict[DType, str] = {
    "float32": "FP32",
    "float16": "FP16",
    "bfloat16": "BF16",
    "float64": "FP64",
}
FROM_OIP: dict[str, DType] = {v: k for k, v in TO_OIP.items()}


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 marks a variable dimension.")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class InferInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[StrictInt]  # true is not 1
    datatype: str
    parameters: dict[str, Any] | None = None
    data: Any = Field(default=None, description="Row-major values (flat or nested).")


class RequestedOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: dict[str, Any] | None = None


# The request parameters rnn-serve reads (others are taken and ignored, as the protocol says):
# typed here so that the document, and the fuzzing generated from it, say what is expected.
_PARAMETERS = {
    "anyOf": [
        {
            "type": "object",
            "properties": {
                "sequence_id": {
                    "description": "The sequence extension's id: a uint64 or a string (at most "
                    'RNN_SERVE_MAX_SEQUENCE_ID_LENGTH characters, 256 by default); 0 or "" '
                    "for none.",
                    "anyOf": [
                        {"type": "integer", "minimum": 0, "maximum": (1 << 64) - 1},
                        {"type": "string", "maxLength": 256},
                    ],
                },
                "sequence_start": {"type": "boolean"},
                "sequence_end": {"type": "boolean"},
                "start_step": {"type": "integer", "minimum": 0},
                "binary_data_output": {"type": "boolean"},
            },
            "additionalProperties": True,
        },
        {"type": "null"},
    ]
}


_SEED_INFER: JsonDict = {
    "inputs": [
        {
            "name": "input",
            "shape": [2, 10],
            "datatype": "FP32",
            "data": [round(0.1 * i, 1) for i in range(20)],
        }
    ]
}  # fmt: skip  (the default model's input: L=2 steps, unbatched)


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_SEED_INFER]})

    id: str | None = None
    parameters: Annotated[dict[str, Any] | None, WithJsonSchema(_PARAMETERS)] = None
    inputs: list[InferInput]
    outputs: list[RequestedOutput] | None = None


class InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[float] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[InferOutput]


class ErrorBody(BaseModel):
    """The protocol's error body."""

    error: str

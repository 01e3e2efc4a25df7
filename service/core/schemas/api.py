"""Request and response bodies of the v1 API."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints
from pydantic.config import JsonDict

from service.core.errors import InvalidInput, Loc
from service.core.schemas.config import DType, RNNConfig
from service.core.schemas.tensors import Tensor

# The model-name rule, in one place: slugs of at most 64 characters.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
ModelName = Annotated[str, StringConstraints(pattern=MODEL_NAME_PATTERN)]
Encoding = Literal["nested", "flat", "b64"]


def check_model_name(name: str, loc: Loc = ("path", "name")) -> str:
    """`name` if it is a valid model name, else a 422 naming the rule."""
    if not MODEL_NAME.fullmatch(name):
        raise InvalidInput.at(loc, f"String should match pattern '{MODEL_NAME_PATTERN}'")
    return name


_STATE = "(D*num_layers, N, {size}), never batch-first; (D*num_layers, {size}) unbatched."

Outputs = Annotated[
    list[Annotated[str, StringConstraints(max_length=64)]] | None,
    Field(
        max_length=8,
        description="The tensors to answer, of output, h_n, c_n (LSTM) and the head's output "
        "(logits, or its activation's name); all of them when absent. A classifier can ask "
        "for its head's output alone.",
    ),
]


_ROW: list[JsonValue] = [round(0.1 * i, 1) for i in range(10)]  # one step: 10 features
_SEED: JsonDict = {"input": [[_ROW], [_ROW[::-1]]]}  # (L=2, N=1, 10): the default model's input


class ForwardRequest(BaseModel):
    """Forward with a registered model (POST /v1/models/{name}/forward)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_SEED]})

    input: Tensor = Field(
        description="(L, N, input_size); (N, L, input_size) if batch_first; (L, input_size) "
        "unbatched. A model with an embedding takes integer token ids: (L, N), (N, L) if "
        "batch_first, or (L,)."
    )
    h0: Tensor | None = Field(
        default=None,
        description="Initial hidden state: " + _STATE.format(size="H_out") + " H_out is "
        "proj_size for a projecting LSTM, else hidden_size. Zeros when absent.",
    )
    c0: Tensor | None = Field(
        default=None,
        description="LSTM only, with h0: the initial cell state, "
        + _STATE.format(size="hidden_size"),
    )
    lengths: list[Annotated[int, Field(strict=True, ge=1)]] | None = Field(
        default=None,
        description="Per-sequence lengths in [1, L]: the batch runs as packed sequences.",
    )
    output_encoding: Encoding = "nested"
    outputs: Outputs = None


class InlineForwardRequest(ForwardRequest):
    """Forward with an inline config (POST /v1/rnn/forward)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "config": {"input_size": 2, "hidden_size": 3, "num_layers": 2},
                    "input": [[[0.1, 0.2]], [[0.3, 0.4]]],
                }
            ]
        },
    )

    config: RNNConfig


_HEAD = "A model with a head whose activation is {name}: its output, {shape}."
_HEAD_SHAPE = "every step's (the output's layout) or each sequence's last valid step's, (N, K)"


class ForwardResponse(BaseModel):
    """The tensors the request's `outputs` named (all by default), each with its shape."""

    model: str = Field(description="The model's name, or the config key for inline configs.")
    output: Tensor | None = Field(default=None, description="The core's output at every step.")
    h_n: Tensor | None = Field(default=None, description="The final hidden state.")
    c_n: Tensor | None = Field(default=None, description="LSTM only: the final cell state.")
    logits: Tensor | None = Field(
        default=None, description=_HEAD.format(name="none", shape=_HEAD_SHAPE)
    )
    softmax: Tensor | None = Field(
        default=None, description=_HEAD.format(name="softmax", shape=_HEAD_SHAPE)
    )
    log_softmax: Tensor | None = Field(
        default=None, description=_HEAD.format(name="log_softmax", shape=_HEAD_SHAPE)
    )
    sigmoid: Tensor | None = Field(
        default=None, description=_HEAD.format(name="sigmoid", shape=_HEAD_SHAPE)
    )
    tanh: Tensor | None = Field(
        default=None, description=_HEAD.format(name="tanh", shape=_HEAD_SHAPE)
    )
    output_shape: list[int] | None = None
    h_n_shape: list[int] | None = None
    c_n_shape: list[int] | None = Field(default=None, description="LSTM only.")
    logits_shape: list[int] | None = None
    softmax_shape: list[int] | None = None
    log_softmax_shape: list[int] | None = None
    sigmoid_shape: list[int] | None = None
    tanh_shape: list[int] | None = None
    dtype: DType
    device: str


class RegisterModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "example-rnn",
                    "config": {"input_size": 10, "hidden_size": 20, "num_layers": 2},
                }
            ]
        },
    )

    name: ModelName
    config: RNNConfig


class ModelInfo(BaseModel):
    name: str
    config: RNNConfig
    parameters: int = Field(description="Scalars in the state_dict.")
    device: str
    dtype: DType
    loaded: bool = Field(description="Whether the module is built on the device right now.")
    ready: bool = Field(description="Whether the model can serve requests.")


class ModelList(BaseModel):
    models: list[ModelInfo]


class Links(BaseModel):
    """`GET /`: where the docs, health, metrics and the two APIs are."""

    name: str
    version: str
    docs: str = Field(description="Swagger UI (served from the package: works offline).")
    redoc: str
    openapi: str
    health: str
    ready: str
    metrics: str
    v1: str = Field(description="The native API (its model list).")
    v2: str = Field(description="The Open Inference Protocol (server metadata).")


class Status(BaseModel):
    status: str


class ProblemItem(BaseModel):
    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    """RFC 9457 problem details (application/problem+json)."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[ProblemItem] = Field(default_factory=list)


class OpenSession(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"batch_size": 1}]})

    h0: Tensor | None = Field(
        default=None, description="Initial state: (D*num_layers, N, H), or (D*num_layers, H)."
    )
    c0: Tensor | None = Field(
        default=None, description="LSTM only, with h0: the initial cell state."
    )
    batch_size: int | None = Field(
        default=None,
        ge=1,
        strict=True,
        description="N, if known; otherwise the first chunk fixes it. Its state must fit the "
        "server's state budget (else 413).",
    )
    state: dict[str, Any] | None = Field(
        default=None,
        description="A state exported by GET /v1/sessions/{id}/state (its JSON form), to resume "
        "exactly: the session starts at its step count. Refused with 409 if it was made under "
        "other weights. Not with h0, c0 or batch_size.",
    )


class SessionChunk(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{**_SEED, "start_step": 0}]}
    )

    input: Tensor = Field(
        description="The next chunk: (L_chunk, N, input_size), or 2-D (token ids: (L_chunk, "
        "N), or 1-D)."
    )
    lengths: list[int] | None = None
    output_encoding: Encoding = "nested"
    outputs: Outputs = None
    start_step: int | None = Field(
        default=None,
        ge=0,
        strict=True,  # an integer: true and "1" are not 1
        description="The step this chunk expects to start at (the session's `steps` before "
        "it): exactly-once chunks. A retry of the last chunk applied (same start_step, same "
        "input) gets its answer again, without advancing the state twice; any other step is a "
        "409 whose `current_step` says where the session is.",
    )


class SessionInfo(BaseModel):
    session_id: str
    model: str
    steps: int = Field(description="Time steps fed so far.")
    batch_size: int | None = Field(description="N; null while unknown or for unbatched chunks.")
    expires_at: str = Field(description="When it expires if left idle (ISO 8601, UTC).")


class ChunkResponse(ForwardResponse):
    session_id: str
    steps: int


class ExportedState(BaseModel):
    """A session's state, tagged with what it was made under (GET /v1/sessions/{id}/state)."""

    format: str = Field(description="'rnn-serve.session-state/1'.")
    model: str
    weights_digest: str = Field(description="sha256 of the model's config and weights.")
    mode: str
    dtype: DType
    steps: int = Field(description="Time steps the state has consumed.")
    batched: bool | None = Field(description="null while unknown (no chunk, no initial state).")
    batch_size: int | None
    h: Tensor | None = Field(default=None, description="The hidden state (base64 form).")
    c: Tensor | None = Field(default=None, description="LSTM only: the cell state.")

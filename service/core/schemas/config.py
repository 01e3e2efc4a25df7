"""The model config: the constructor arguments of torch.nn.RNN, nn.LSTM or nn.GRU (`mode`),
plus dtype and seed; and, around that recurrent core, an optional input layer (`embedding`, an
nn.Embedding) and an optional head (`head`, an nn.Linear and an activation)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import cached_property
from typing import Any, Literal, Self

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

DType = Literal["float32", "float16", "bfloat16", "float64"]
DTYPES: tuple[DType, ...] = ("float32", "float16", "bfloat16", "float64")
Mode = Literal["RNN", "LSTM", "GRU"]
MODES: tuple[Mode, ...] = ("RNN", "LSTM", "GRU")

#: gates per mode: rows of weight_ih / weight_hh are gates * hidden_size
GATES: dict[Mode, int] = {"RNN": 1, "LSTM": 4, "GRU": 3}


#: the largest vocabulary: every id below it is exact in a float32 or float64 JSON number
MAX_EMBEDDINGS = 1 << 24
Activation = Literal["none", "softmax", "log_softmax", "sigmoid", "tanh"]
HeadOn = Literal["every_step", "last_step"]


def _json_type(value: Any) -> str:
    """The name torch would print for a value of this JSON type."""
    return type(value).__name__


class EmbeddingConfig(BaseModel):
    """`nn.Embedding(num_embeddings, input_size, padding_idx)` in front of the core: the input
    is then integer token ids. Its embedding_dim is the core's `input_size`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_embeddings: int = Field(gt=0, le=MAX_EMBEDDINGS, description="Rows: the vocabulary.")
    padding_idx: int | None = Field(
        default=None,
        description="nn.Embedding's padding_idx (negative counts from the end); its row is "
        "zeros in a seeded model.",
    )
    max_norm: None = Field(
        default=None,
        description="Refused: nn.Embedding's max_norm renormalises the weights in place on "
        "every lookup, so serving would change the model.",
    )

    @field_validator("num_embeddings", "padding_idx", mode="before")
    @classmethod
    def _int(cls, value: Any, info: Any) -> Any:
        if value is None and info.field_name == "padding_idx":
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{info.field_name} should be of type int, got: {_json_type(value)}")
        return value

    @field_validator("max_norm", mode="before")
    @classmethod
    def _no_max_norm(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError(
                "max_norm is refused: nn.Embedding renormalises its weights in place on every "
                "lookup with it, so each forward would change the model"
            )
        return value

    @model_validator(mode="after")
    def _padding_in_range(self) -> EmbeddingConfig:
        n, idx = self.num_embeddings, self.padding_idx
        if idx is not None and not -n <= idx < n:
            raise ValueError("Padding_idx must be within num_embeddings")
        return self


class HeadConfig(BaseModel):
    """`nn.Linear(core output features, out_features, bias)` behind the core, then an
    activation, on every step's output or on each sequence's last valid step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    out_features: int = Field(gt=0, description="Features of the head's output.")
    bias: bool = True
    activation: Activation = Field(
        default="none",
        description="Applied to the linear layer's output, over its last dimension: none "
        "(the answer calls it `logits`), softmax, log_softmax, sigmoid or tanh (the answer "
        "names it after the activation).",
    )
    on: HeadOn = Field(
        default="every_step",
        description="every_step: the head reads the core's output at every step; last_step: "
        "at each sequence's own last valid step (its length's, with packed lengths).",
    )

    @field_validator("out_features", mode="before")
    @classmethod
    def _int(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"out_features should be of type int, got: {_json_type(value)}")
        return value

    @field_validator("bias", mode="before")
    @classmethod
    def _strict_bool(cls, value: Any) -> Any:
        if not isinstance(value, bool):
            raise ValueError(f"bias should be of type bool, got: {_json_type(value)}")
        return value

    @property
    def output_name(self) -> str:
        """The answer's name for the head's output: `logits`, or the activation's name."""
        return "logits" if self.activation == "none" else self.activation


class RNNConfig(BaseModel):
    """Arguments of `torch.nn.RNN(...)`, `nn.LSTM(...)` or `nn.GRU(...)` (by `mode`, default
    RNN); defaults are torch's, plus `dtype` and `seed`.

    Each mode takes its torch class's arguments: `nonlinearity` is nn.RNN's only, `proj_size`
    nn.LSTM's only (0, the default, means no projection for every mode). Messages for invalid
    values are torch's own, so a client sees what torch would say.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Mode = Field(default="RNN", description="torch.nn.RNN, nn.LSTM or nn.GRU.")
    input_size: int = Field(gt=0, description="Features in the input x.")
    hidden_size: int = Field(gt=0, description="Features in the hidden state h.")
    num_layers: int = Field(default=1, gt=0, description="Stacked recurrent layers.")
    nonlinearity: Literal["tanh", "relu"] = Field(
        default="tanh", description="RNN only (LSTM and GRU refuse it, as torch does)."
    )
    bias: bool = True
    batch_first: bool = False
    dropout: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Training-only; no effect on inference."
    )
    bidirectional: bool = False
    proj_size: int = Field(
        default=0,
        ge=0,
        description="LSTM only: h (and the output) get proj_size features; 0 = no projection.",
    )
    dtype: DType = "float32"
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="torch.manual_seed(seed).")
    embedding: EmbeddingConfig | None = Field(
        default=None,
        description="An input layer: the input is then integer token ids, (L, N), (N, L) if "
        "batch_first, or (L,) unbatched; input_size is the embedding's width.",
    )
    head: HeadConfig | None = Field(
        default=None,
        description="A linear head (and activation) on the core's output; the answer adds "
        "its output.",
    )

    @model_validator(mode="before")
    @classmethod
    def _arguments_of_mode(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        mode = data.get("mode", "RNN")
        if mode not in MODES:
            return data  # the field's own error names the choices
        if mode != "LSTM" and "proj_size" in data and data["proj_size"] != 0:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if mode != "RNN" and "nonlinearity" in data:
            raise ValueError(
                f"nonlinearity is an argument of nn.RNN only, not nn.{mode} "
                "(torch: RNNBase.__init__() got an unexpected keyword argument 'nonlinearity')"
            )
        proj, hidden = data.get("proj_size", 0), data.get("hidden_size")
        if type(proj) is int and type(hidden) is int and hidden > 0 and proj >= hidden:
            raise ValueError("proj_size has to be smaller than hidden_size")
        return data

    @field_validator("input_size", "hidden_size", "num_layers", "seed", "proj_size", mode="before")
    @classmethod
    def _int(cls, value: Any, info: Any) -> Any:
        name = info.field_name
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} should be of type int, got: {_json_type(value)}")
        if name == "seed":
            if not 0 <= value <= 2**63 - 1:
                raise ValueError(f"seed must be in [0, 2**63 - 1], got {value}")
        elif name == "proj_size":
            if value < 0:
                raise ValueError(
                    "proj_size should be a positive integer or zero to disable projections"
                )
        elif value <= 0:
            raise ValueError(f"{name} must be greater than zero, got {value}")
        return value

    @field_validator("bias", "batch_first", "bidirectional", mode="before")
    @classmethod
    def _strict_bool(cls, value: Any, info: Any) -> Any:
        if not isinstance(value, bool):
            raise ValueError(f"{info.field_name} should be of type bool, got: {_json_type(value)}")
        return value

    @field_validator("nonlinearity", mode="before")
    @classmethod
    def _nonlinearity(cls, value: Any) -> Any:
        if value not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity {value!r}. Select from 'tanh' or 'relu'.")
        return value

    @field_validator("dropout", mode="before")
    @classmethod
    def _dropout(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(
                "dropout should be a number in range [0, 1] representing the probability of an "
                f"element being zeroed, got {value!r}"
            )
        return float(value)

    @model_serializer(mode="wrap")
    def _only_arguments_of_mode(self, handler: SerializerFunctionWrapHandler) -> Any:
        # What is stored and shown reads back as the same config: nonlinearity is RNN's only.
        data = handler(self)
        if isinstance(data, dict):
            if self.mode != "RNN":
                data.pop("nonlinearity", None)
            # A core alone reads back (and hashes) as it did before there were layers around it.
            for layer in ("embedding", "head"):
                if data.get(layer, 0) is None:
                    del data[layer]
        return data

    # --- shapes ---------------------------------------------------------------------------------
    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def state_rows(self) -> int:
        """The first dim of h0/h_n (and c0/c_n): D * num_layers, whatever batch_first says."""
        return self.num_directions * self.num_layers

    @property
    def h_size(self) -> int:
        """Features of h per direction: proj_size when an LSTM projects, else hidden_size."""
        return self.proj_size or self.hidden_size

    @property
    def output_size(self) -> int:
        """Features of the output: D * h_size."""
        return self.num_directions * self.h_size

    @property
    def has_cell(self) -> bool:
        """Whether the state has a cell part (c0 / c_n): LSTM only."""
        return self.mode == "LSTM"

    @property
    def state_sizes(self) -> tuple[int, ...]:
        """Feature sizes of the state's parts: (h,) or, for LSTM, (h, c)."""
        return (self.h_size, self.hidden_size) if self.has_cell else (self.h_size,)

    @property
    def ids(self) -> bool:
        """Whether the input is token ids (an embedding in front), not features."""
        return self.embedding is not None

    @property
    def head_size(self) -> int:
        """Features of the head's output (0 without a head)."""
        return self.head.out_features if self.head is not None else 0

    @property
    def answer_names(self) -> tuple[str, ...]:
        """The tensors an answer holds: output, h_n, c_n (LSTM), the head's output (a head)."""
        names = ("output", "h_n", "c_n") if self.has_cell else ("output", "h_n")
        return names if self.head is None else (*names, self.head.output_name)

    @property
    def sliceable(self) -> bool:
        """Whether a forward can run in time slices, the state carried between them: a
        unidirectional one (the reverse direction needs the whole sequence first)."""
        return not self.bidirectional

    def step_macs(self) -> int:
        """Multiply-accumulates of one time step of one sequence: the cost unit of admission."""
        h, d, gates = self.hidden_size, self.num_directions, GATES[self.mode]
        total = 0
        for layer in range(self.num_layers):
            in_features = self.input_size if layer == 0 else d * self.h_size
            per_direction = gates * h * (in_features + self.h_size) + self.proj_size * h
            total += d * per_direction
        return total + self.head_size * self.output_size

    def parameter_count(self) -> int:
        """Number of scalars in the module's state_dict."""
        h, d, gates = self.hidden_size, self.num_directions, GATES[self.mode]
        total = 0
        for layer in range(self.num_layers):
            in_features = self.input_size if layer == 0 else d * self.h_size
            per_direction = gates * h * (in_features + self.h_size)
            per_direction += 2 * gates * h if self.bias else 0
            per_direction += self.proj_size * h
            total += d * per_direction
        if self.embedding is not None:
            total += self.embedding.num_embeddings * self.input_size
        if self.head is not None:
            total += self.head.out_features * (self.output_size + int(self.head.bias))
        return total

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy, its key computed afresh: pydantic copies the instance's `__dict__`, where the
        cached key lives, so a copy `update`d to other fields would keep the old key and share
        the old fields' cached module."""
        copied = super().model_copy(update=update, deep=deep)
        copied.__dict__.pop("canonical_key", None)
        return copied

    @cached_property
    def canonical_key(self) -> str:
        """A stable hash of every field, so equal configs share one cached module."""
        blob = orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        return "sha256:" + hashlib.sha256(blob).hexdigest()

"""The model config: the constructor arguments of torch.nn.RNN, nn.LSTM or nn.GRU (`mode`),
plus dtype and seed."""

from __future__ import annotations

import hashlib
from functools import cached_property
from typing import Any, Literal

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


def _json_type(value: Any) -> str:
    """The name torch would print for a value of this JSON type."""
    return type(value).__name__


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
        if self.mode != "RNN" and isinstance(data, dict):
            data.pop("nonlinearity", None)
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
        return total

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
        return total

    @cached_property
    def canonical_key(self) -> str:
        """A stable hash of every field, so equal configs share one cached module."""
        blob = orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        return "sha256:" + hashlib.sha256(blob).hexdigest()

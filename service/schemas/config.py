"""The RNN config: torch.nn.RNN's constructor arguments plus dtype and seed."""

from __future__ import annotations

import hashlib
from functools import cached_property
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DType = Literal["float32", "float16", "bfloat16", "float64"]
DTYPES: tuple[DType, ...] = ("float32", "float16", "bfloat16", "float64")


def _json_type(value: Any) -> str:
    """The name torch would print for a value of this JSON type."""
    return type(value).__name__


class RNNConfig(BaseModel):
    """Arguments of `torch.nn.RNN(...)`; defaults are torch's, plus `dtype` and `seed`.

    Messages for invalid values are torch's own, so a client sees what `nn.RNN` would say.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_size: int = Field(gt=0, description="Features in the input x.")
    hidden_size: int = Field(gt=0, description="Features in the hidden state h.")
    num_layers: int = Field(default=1, gt=0, description="Stacked recurrent layers.")
    nonlinearity: Literal["tanh", "relu"] = "tanh"
    bias: bool = True
    batch_first: bool = False
    dropout: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Training-only; no effect on inference."
    )
    bidirectional: bool = False
    dtype: DType = "float32"
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="torch.manual_seed(seed).")

    @model_validator(mode="before")
    @classmethod
    def _no_proj_size(cls, data: Any) -> Any:
        if isinstance(data, dict) and "proj_size" in data:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        return data

    @field_validator("input_size", "hidden_size", "num_layers", "seed", mode="before")
    @classmethod
    def _positive_int(cls, value: Any, info: Any) -> Any:
        name = info.field_name
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} should be of type int, got: {_json_type(value)}")
        if name == "seed":
            if not 0 <= value <= 2**63 - 1:
                raise ValueError(f"seed must be in [0, 2**63 - 1], got {value}")
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

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def parameter_count(self) -> int:
        """Number of scalars in the module's state_dict."""
        h, d = self.hidden_size, self.num_directions
        total = 0
        for layer in range(self.num_layers):
            in_features = self.input_size if layer == 0 else d * h
            per_direction = h * in_features + h * h + (2 * h if self.bias else 0)
            total += d * per_direction
        return total

    @cached_property
    def canonical_key(self) -> str:
        """A stable hash of every field, so equal configs share one cached module."""
        blob = orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        return "sha256:" + hashlib.sha256(blob).hexdigest()

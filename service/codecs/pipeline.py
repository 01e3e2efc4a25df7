"""The pipeline's vocabulary, shared by the data plane and every protocol's codec.

A codec (`service.codecs.v1`, `service.codecs.oip`) turns a request body into `Decoded` inputs for
a model's config, and a `Served` result into an `Encoded` body. What HTTP adds to that (a status
other than 200, the request id) is `service.http`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from service.catalog.spec import ModelSpec
from service.core.errors import InvalidInput
from service.core.schemas.config import RNNConfig
from service.engine.backend import SessionView
from service.engine.job import ForwardResult, Inputs
from service.engine.state import SessionState
from service.engine.tensor import WireTensor


@dataclass(frozen=True)
class Sequence:
    """The OIP sequence extension's parameters: a stream whose state the server holds."""

    id: str
    start: bool = False
    end: bool = False
    numeric: bool = False  # a uint64 id: 1 and "1" are different sequences


@dataclass(slots=True)  # values: never changed once made (not frozen: that costs per request)
class Decoded:
    """What a codec makes of a forward request."""

    inputs: Inputs
    sequence: Sequence | None = None
    start_step: int | None = None  # the step a session chunk expects to start at


@dataclass(slots=True)
class Served:
    """What a codec encodes: the model, the result, and where it ran."""

    spec: ModelSpec
    result: ForwardResult
    device: str
    session: SessionView | None = None


@dataclass(slots=True)
class Encoded:
    """A codec's answer: the body, its media type and the protocol's own headers (OIP's
    Inference-Header-Content-Length). It is sent with status 200."""

    body: bytes
    media_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class Codec(Protocol):
    """One protocol's wire format for a forward (see `service.codecs`)."""

    def decode(self, config: RNNConfig, max_elements: int) -> Decoded: ...

    def encode(self, served: Served) -> Encoded: ...


class StateCodec(Protocol):
    """A protocol's wire format for opening a session: an optional initial state, or an
    exported one to resume."""

    def decode_import(self, config: RNNConfig, max_elements: int) -> SessionState | None: ...

    def decode_state(
        self, config: RNNConfig, max_elements: int
    ) -> tuple[WireTensor | None, WireTensor | None, int | None]:
        """(h0, c0, batch_size)"""
        ...


def check_outputs(requested: list[str] | None, config: RNNConfig) -> None:
    """A v1 `outputs` list names only tensors the model answers."""
    if requested is None:
        return
    names = config.answer_names
    for i, name in enumerate(requested):
        if name not in names:
            raise InvalidInput.at(
                ("body", "outputs", i),
                f"unknown output {name!r:.40}; the model answers {', '.join(names)}",
            )


def result_outputs(
    config: RNNConfig, result: ForwardResult, requested: list[str] | None
) -> list[tuple[str, Any]]:
    """(name, array) of each tensor to answer: those asked for, in the order asked (each
    once), else all, in the model's order."""
    arrays = {"output": result.output, "h_n": result.h_n, "c_n": result.c_n}
    if config.head is not None:
        arrays[config.head.output_name] = result.head
    names = config.answer_names if requested is None else dict.fromkeys(requested)
    return [(n, arrays[n]) for n in names if arrays.get(n) is not None]

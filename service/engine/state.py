"""A session's state on the host (`SessionState`) and its safetensors form.

The safetensors form is what `GET /v1/sessions/{id}/state` exports as `application/octet-stream`,
what an opening may take back, and what the engine stores when it hands sessions over: tensors `h`
(and `c` for LSTM) in the model's dtype (bfloat16 as its bit patterns, `U16`), the tags in the
file's string metadata. The JSON form is the v1 API's (`service.codecs.state`).

The tags say what the state is worth resuming under: the model's name, a digest of its config and
weights (`weights_digest`: state made under other weights is refused), and the number of time
steps it has consumed. Nothing here is pickled; a safetensors header is JSON and bounded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from service.core.errors import InvalidInput, MalformedBody
from service.core.schemas.config import DType
from service.engine.tensor import CARRIER, WireTensor

FORMAT = "rnn-serve.session-state/1"
PART_NAMES = ("h", "c")


@dataclass(frozen=True)
class SessionState:
    """A session's state on the host, with what it was made under."""

    model: str
    weights_digest: str
    mode: str
    dtype: DType
    steps: int
    # (h,) or (h, c): (D*num_layers, N, H) batched or (D*num_layers, H) unbatched; () when the
    # session has neither run a chunk nor taken an initial state (its state is zeros)
    parts: tuple[np.ndarray[Any, Any], ...]
    batched: bool | None  # None while the chunks' form is unknown (no state, no chunk yet)
    batch: int | None  # N for batched streams

    def initial_state(self) -> tuple[WireTensor | None, WireTensor | None]:
        """(h0, c0) to open a session that resumes this state (None where there is none)."""
        parts = [WireTensor(p, self.dtype, True) for p in self.parts]
        h0, c0 = (*parts, None, None)[:2]
        return h0, c0

    def tags(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "model": self.model,
            "weights_digest": self.weights_digest,
            "mode": self.mode,
            "dtype": self.dtype,
            "steps": str(self.steps),
            "batched": {None: "unknown", True: "true", False: "false"}[self.batched],
            "batch_size": "" if self.batch is None else str(self.batch),
        }


# numpy dtype -> safetensors dtype, for the arrays a state holds
_ST_DTYPES = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<f8"): "F64",
              np.dtype("<u2"): "U16", np.dtype("<i8"): "I64"}  # fmt: skip


def to_safetensors(
    state: SessionState,
    extra_tags: Mapping[str, str] | None = None,
    extra_tensors: Mapping[str, np.ndarray[Any, Any]] | None = None,
) -> bytes:
    tensors = dict(zip(PART_NAMES, state.parts, strict=False))
    tensors.update(extra_tensors or {})
    return _save(tensors, {**state.tags(), **(extra_tags or {})})


def _save(tensors: Mapping[str, np.ndarray[Any, Any]], metadata: dict[str, str]) -> bytes:
    """The safetensors format written directly: an 8-byte little-endian header length, the JSON
    header (each tensor's dtype, shape and byte range; the string metadata), padded with spaces
    to 8 bytes, then the tensors' bytes. safetensors' own `save` makes the same kind of file
    (its loader reads both) at about six times the cost, which a session in Redis pays on every
    chunk's commit. An array of another dtype goes through safetensors' `save`."""
    header: dict[str, Any] = {"__metadata__": metadata}
    data, offset = [], 0
    for name, array in tensors.items():
        kind = _ST_DTYPES.get(array.dtype)
        if kind is None:
            return bytes(st_save({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                                 metadata=metadata))  # fmt: skip
        raw = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": kind, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}  # fmt: skip
        data.append(raw)
        offset += len(raw)
    head = orjson.dumps(header)
    head += b" " * (-len(head) % 8)
    return b"".join([len(head).to_bytes(8, "little"), head, *data])


def _int(tags: Mapping[str, str], name: str, loc: tuple[str, ...]) -> int:
    raw = tags.get(name, "")
    if not raw.isdigit() or len(raw) > 18:
        raise InvalidInput.at((*loc, name), f"expected a non-negative integer, got {raw!r}")
    return int(raw)


def of_tags(
    tags: Mapping[str, Any], parts: tuple[np.ndarray[Any, Any], ...], loc: tuple[str, ...]
) -> SessionState:
    if tags.get("format") != FORMAT:
        raise InvalidInput.at(
            (*loc, "format"), f"expected {FORMAT!r} (a state exported by rnn-serve)"
        )
    for name in ("model", "weights_digest", "mode", "dtype"):
        if not isinstance(tags.get(name), str) or not tags[name]:
            raise InvalidInput.at((*loc, name), "expected a non-empty string")
    dtype = tags["dtype"]
    if dtype not in CARRIER:
        raise InvalidInput.at((*loc, "dtype"), f"expected one of {sorted(CARRIER)}, got {dtype!r}")
    forms: dict[str, bool | None] = {"unknown": None, "true": True, "false": False}
    if str(tags.get("batched")) not in forms:
        raise InvalidInput.at((*loc, "batched"), "expected 'true', 'false' or 'unknown'")
    batched = forms[str(tags.get("batched"))]
    batch = None
    if batched:
        batch = _int(tags, "batch_size", loc)
    for name, p in zip(PART_NAMES, parts, strict=False):
        if p.dtype != CARRIER[dtype]:
            raise InvalidInput.at((*loc, name), f"expected {dtype} values, got {p.dtype}")
    if batched is None and parts:
        raise InvalidInput.at((*loc, "batched"), "a state with tensors is batched or not")
    return SessionState(
        str(tags["model"]), str(tags["weights_digest"]), str(tags["mode"]), dtype,
        _int(tags, "steps", loc), parts, batched, batch,
    )  # fmt: skip


def from_safetensors(
    data: bytes, loc: tuple[str, ...] = ("body",)
) -> tuple[SessionState, dict[str, str], dict[str, np.ndarray[Any, Any]]]:
    """A state from its safetensors form, with the file's other tags and tensors."""
    try:
        tensors = st_load(data)  # checks the header and every tensor's bounds
        # safetensors' numpy API drops the metadata: read it from the (checked) JSON header
        header = orjson.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    except (SafetensorError, ValueError, TypeError) as exc:
        raise MalformedBody(f"the body is not a safetensors file: {exc}") from None
    tags = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(tags, dict):
        raise MalformedBody("the safetensors file has no metadata: not an exported state")
    parts = tuple(tensors.pop(n) for n in PART_NAMES if n in tensors)
    return of_tags(tags, parts, loc), tags, tensors

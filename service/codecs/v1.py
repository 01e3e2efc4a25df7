"""The native v1 JSON codec: forward and session-chunk bodies in, forward answers out.

Tensors come in three wire forms (nested lists, flat `{shape, dtype, data}`, base64
`{shape, dtype, b64}`; see `service.codecs.tensors`); pydantic validates only the envelope.
"""

from __future__ import annotations

from typing import Any

import orjson

from service.codecs.envelope import loads, may_hide_bools, parse
from service.codecs.fastjson import TENSORS, loads_forward
from service.codecs.pipeline import Decoded, Encoded, Served, check_outputs, result_outputs
from service.codecs.state import from_json
from service.codecs.tensors import decode_ids, decode_tensor, encode_tensor
from service.core.errors import InvalidInput, Loc
from service.core.schemas.api import ForwardRequest, InlineForwardRequest, OpenSession, SessionChunk
from service.core.schemas.config import RNNConfig
from service.engine.job import Inputs
from service.engine.state import SessionState, from_safetensors
from service.engine.tensor import WireTensor
from service.engine.validate import C0, H0, INPUT

#: below this, a forward body is parsed by orjson alone (measured: the two paths cross near 11 KB)
FAST_JSON_MIN_BYTES = 8192


def _still_json(tensor: Any) -> bool:
    """A tensor whose numbers are still parsed JSON (where a boolean could pass for 0 or 1)."""
    if isinstance(tensor, dict):
        return isinstance(tensor.get("data"), list)
    return isinstance(tensor, list)


class V1Forward:
    """A forward body (`InlineForwardRequest`, `ForwardRequest` or `SessionChunk`)."""

    def __init__(self, body: bytes, envelope: type[ForwardRequest] | type[SessionChunk]) -> None:
        # nested and flat tensors straight to NumPy where nothing can differ; a small body is
        # quicker through orjson (simdjson's walk of the rows costs more than it saves there)
        obj = loads_forward(body) if len(body) >= FAST_JSON_MIN_BYTES else loads(body)
        self.req = parse(envelope, obj)
        # Booleans can hide only in tensors that are still JSON (lists, flat `data` lists): one
        # scan of the raw body says whether to look, and none is needed when every tensor is
        # NumPy or base64.
        if any(_still_json(obj.get(k)) for k in TENSORS):
            config = obj.get("config")
            known = sum(type(v) is bool for v in config.values()) if isinstance(config, dict) else 0
            self._check_bools = may_hide_bools(body, known)
        else:
            self._check_bools = False

    def inline_config(self) -> RNNConfig:
        assert isinstance(self.req, InlineForwardRequest)
        return self.req.config

    def decode(self, config: RNNConfig, max_elements: int) -> Decoded:
        req, bools = self.req, self._check_bools
        check_outputs(req.outputs, config)
        if config.ids:
            x = decode_ids(req.input, INPUT, max_elements, check_bools=bools)
        else:
            x = decode_tensor(req.input, INPUT, config.dtype, max_elements, check_bools=bools)
        if isinstance(req, SessionChunk):
            return Decoded(Inputs(x, None, None, req.lengths), None, req.start_step)
        h0 = _tensor(req.h0, H0, config, max_elements, bools)
        c0 = _tensor(req.c0, C0, config, max_elements, bools)
        return Decoded(Inputs(x, h0, c0, req.lengths))

    def encode(self, served: Served) -> Encoded:
        """`{"model", "output", "h_n", ["c_n"], [the head's output], shapes, "dtype", "device"}`
        (the tensors `outputs` names, all by default), plus `session_id` and `steps` for a
        session's chunk."""
        spec, result, encoding = served.spec, served.result, self.req.output_encoding
        dtype = spec.config.dtype
        payload: dict[str, Any] = {"model": spec.name}
        for name, arr in result_outputs(spec.config, result, self.req.outputs):
            payload[name] = encode_tensor(arr, dtype, encoding)
            payload[f"{name}_shape"] = list(arr.shape)
        payload["dtype"] = dtype
        payload["device"] = served.device
        if served.session is not None:
            payload["session_id"] = served.session.id
            payload["steps"] = served.session.steps
        return Encoded(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY))


class V1OpenSession:
    """A session's opening body: an optional initial state and batch size, or an exported
    state to resume (as JSON in `state`, or a whole safetensors body: `binary`)."""

    def __init__(self, body: bytes, binary: bool = False) -> None:
        self._binary = body if binary else None
        self.req = OpenSession() if binary else parse(OpenSession, loads(body))
        self._check_bools = False if binary else may_hide_bools(body, 0)

    def decode_import(self, config: RNNConfig, max_elements: int) -> SessionState | None:
        """The exported state to resume, if the body is one."""
        if self._binary is not None:
            state, _, _ = from_safetensors(self._binary)
            return state
        if self.req.state is None:
            return None
        if self.req.h0 is not None or self.req.c0 is not None or self.req.batch_size is not None:
            raise InvalidInput.at(
                ("body", "state"), "give an exported state, or h0/c0/batch_size, not both"
            )
        return from_json(self.req.state, config.dtype, max_elements, ("body", "state"))

    def decode_state(
        self, config: RNNConfig, max_elements: int
    ) -> tuple[WireTensor | None, WireTensor | None, int | None]:
        req, bools = self.req, self._check_bools
        h0 = _tensor(req.h0, H0, config, max_elements, bools)
        c0 = _tensor(req.c0, C0, config, max_elements, bools)
        return h0, c0, req.batch_size


def _tensor(
    obj: Any, loc: Loc, config: RNNConfig, max_elements: int, check_bools: bool
) -> WireTensor | None:
    if obj is None:
        return None
    return decode_tensor(obj, loc, config.dtype, max_elements, check_bools=check_bools)

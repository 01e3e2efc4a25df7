"""Open Inference Protocol v2 (KServe / Triton): JSON and the binary tensor data extension.

Only parsing and shaping live here: the same validation, engine and batcher as v1 do the work.
Errors are the protocol's `{"error": "..."}`.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson
from anyio import to_thread
from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from service import __version__
from service.api.body import field_errors
from service.api.deps import ReadinessDep
from service.api.problems import status_of
from service.api.v1 import _NAME, registered_target
from service.engine.codec import (
    CARRIER,
    WireTensor,
    bf16_bits_to_f32,
    cast_numbers,
    check_raw_finite,
)
from service.engine.engine import Engine
from service.engine.sessions import SessionStore
from service.engine.validate import validate_forward
from service.errors import InvalidInput, MalformedBody, ServiceError, SessionNotFound
from service.registry import ModelEntry, Registry
from service.schemas.config import DType, RNNConfig
from service.schemas.oip import (
    FROM_OIP,
    TO_OIP,
    ErrorBody,
    InferRequest,
    InferResponse,
    Live,
    ModelMetadata,
    ModelReady,
    ServerMetadata,
    TensorMetadata,
)
from service.settings import Settings

router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"])

HEADER = "inference-header-content-length"
EXTENSIONS = ["binary_tensor_data", "sequence"]
_ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
# The protocol answers client errors with 400 whatever their kind; the rest keep their status.
_CLIENT_ERRORS = {400, 415, 422}


class OIPError(Exception):
    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


def _error(exc: ServiceError) -> OIPError:
    status, _ = status_of(exc)
    detail = exc.detail
    if exc.errors and len(exc.errors) == 1 and exc.errors[0].msg not in detail:
        detail = f"{detail}: {exc.errors[0].msg}"
    return OIPError(
        400 if status in _CLIENT_ERRORS else status, detail, getattr(exc, "retry_after", None)
    )


def error_response(exc: OIPError) -> Response:
    headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after else None
    return Response(
        orjson.dumps({"error": exc.message}),
        status_code=exc.status,
        media_type="application/json",
        headers=headers,
    )


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"description": "error", **_ERROR} for s in statuses}


@router.get("", summary="Server metadata")
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="rnn-serve", version=__version__, extensions=EXTENSIONS)


@router.get("/health/live", summary="Server liveness")
async def server_live() -> Live:
    return Live(live=True)


@router.get("/health/ready", summary="Server readiness", responses=_responses(503))
async def server_ready(readiness: ReadinessDep) -> Response:
    body = orjson.dumps({"ready": readiness.ready})
    return Response(
        body, status_code=200 if readiness.ready else 503, media_type="application/json"
    )


def _check_name(name: str) -> None:
    # Validated here, not by FastAPI, so that a bad name gets the protocol's error body.
    if not _NAME.fullmatch(name):
        raise OIPError(400, f"invalid model name {name!r}")


def metadata(entry: ModelEntry) -> ModelMetadata:
    c = entry.config
    rows, datatype = c.num_directions * c.num_layers, TO_OIP[c.dtype]
    return ModelMetadata(
        name=entry.name,
        versions=["1"],
        platform="pytorch_rnn",
        inputs=[
            TensorMetadata(name="input", datatype=datatype, shape=[-1, -1, c.input_size]),
            TensorMetadata(name="h0", datatype=datatype, shape=[rows, -1, c.hidden_size]),
            TensorMetadata(name="lengths", datatype="INT64", shape=[-1]),
        ],
        outputs=[
            TensorMetadata(
                name="output", datatype=datatype, shape=[-1, -1, c.num_directions * c.hidden_size]
            ),
            TensorMetadata(name="h_n", datatype=datatype, shape=[rows, -1, c.hidden_size]),
        ],
    )


def protocol_errors(
    endpoint: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Answer the endpoint's errors in the protocol's form (`{"error": ...}`)."""

    @functools.wraps(endpoint)
    async def wrapper(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ServiceError as exc:
            return error_response(_error(exc))
        except OIPError as exc:
            return error_response(exc)

    return wrapper


async def _entry(request: Request) -> ModelEntry:
    name = request.path_params["name"]
    _check_name(name)
    registry: Registry = request.state.registry
    return await to_thread.run_sync(registry.get, name)


# Model routes take the name from the path themselves (declared in openapi_extra), so that a bad
# name gets the protocol's error body rather than FastAPI's validation error.
_NAME_PARAM = {
    "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
}


@router.get(
    "/models/{name}",
    summary="Model metadata",
    responses=_responses(400, 404),
    openapi_extra=_NAME_PARAM,
)
@protocol_errors
async def model_metadata(request: Request) -> Response:
    entry = await _entry(request)
    return Response(metadata(entry).model_dump_json(), media_type="application/json")


@router.get(
    "/models/{name}/ready",
    summary="Model readiness",
    responses=_responses(400, 404),
    openapi_extra=_NAME_PARAM,
)
@protocol_errors
async def model_ready(request: Request) -> Response:
    entry = await _entry(request)
    return Response(
        ModelReady(name=entry.name, ready=True).model_dump_json(), media_type="application/json"
    )


# --- inference ------------------------------------------------------------------------------------
_INT_DTYPES: dict[str, np.dtype[Any]] = {"INT64": np.dtype("<i8"), "INT32": np.dtype("<i4")}


def _tensor_values(
    item: Any, binary: memoryview, offset: int, np_dtype: np.dtype[Any], loc: tuple[str | int, ...]
) -> tuple[np.ndarray[Any, Any], int]:
    """An input's values, from the binary section (moving `offset`) or from JSON `data`."""
    count = math.prod(item.shape)
    size = (item.parameters or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise InvalidInput.at(loc, f"binary_data_size {size!r} runs past the binary data")
        if size != count * np_dtype.itemsize:
            raise InvalidInput.at(
                loc, f"shape {item.shape} of {item.datatype} needs {count * np_dtype.itemsize} "
                f"bytes, got binary_data_size {size}",
            )  # fmt: skip
        arr = np.frombuffer(binary[offset : offset + size], dtype=np_dtype)
        return arr.reshape(item.shape), offset + size
    if item.data is None:
        raise InvalidInput.at(loc, "expected data, or binary_data_size with binary data")
    try:
        arr = np.asarray(item.data)
    except (ValueError, TypeError):
        raise InvalidInput.at(loc, "expected a rectangular list of numbers") from None
    if arr.dtype.kind not in "iuf" and arr.size:
        raise InvalidInput.at(loc, "expected numbers")
    if arr.size != count:
        raise InvalidInput.at(loc, f"shape {item.shape} needs {count} values, got {arr.size}")
    return arr.reshape(item.shape), offset


def parse_infer(
    body: bytes, header_length: int | None, config: RNNConfig, max_elements: int
) -> tuple[InferRequest, WireTensor, WireTensor | None, list[int] | None]:
    """An infer request -> the same tensors v1 decodes (dtype declared, as OIP always is)."""
    if header_length is not None:
        if not 0 <= header_length <= len(body):
            raise MalformedBody(f"Inference-Header-Content-Length {header_length} is out of range")
        head, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        head, binary = body, memoryview(b"")
    try:
        req = InferRequest.model_validate(orjson.loads(head))
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"the inference header is not valid JSON: {exc}") from None
    except ValidationError as exc:
        errs = field_errors(exc.errors(include_url=False), ("body",))
        raise InvalidInput(
            "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errs), errs
        ) from None
    tensors: dict[str, Any] = {}
    offset = 0
    for i, item in enumerate(req.inputs):
        loc = ("body", "inputs", i)
        if item.name not in ("input", "h0", "lengths") or item.name in tensors:
            raise InvalidInput.at(
                loc, f"unexpected input {item.name!r}; expected input, h0, lengths once each"
            )
        if any(type(d) is not int or d < 0 for d in item.shape) or len(item.shape) > 3:
            raise InvalidInput.at(loc, f"invalid shape {item.shape}")
        if math.prod(item.shape) > max_elements:
            raise InvalidInput.at(loc, f"{item.name} has over {max_elements} elements")
        if item.name == "lengths":
            np_dtype = _INT_DTYPES.get(item.datatype)
            if np_dtype is None or len(item.shape) != 1:
                raise InvalidInput.at(
                    loc, f"lengths must be INT64 with shape [N], got {item.datatype} {item.shape}"
                )
            arr, offset = _tensor_values(item, binary, offset, np_dtype, loc)
            if arr.dtype.kind != "i" and arr.size:
                raise InvalidInput.at(loc, "lengths must be integers")
            tensors["lengths"] = [int(n) for n in arr]
            continue
        dtype: DType | None = FROM_OIP.get(item.datatype)
        if dtype is None:
            raise InvalidInput.at(
                loc, f"datatype must be one of {', '.join(FROM_OIP)}, got {item.datatype!r}"
            )
        arr, offset = _tensor_values(item, binary, offset, CARRIER[dtype], loc)
        if item.data is not None:  # JSON numbers -> the declared dtype, range-checked
            arr = cast_numbers(arr, dtype, loc)
        else:
            check_raw_finite(arr, dtype, loc)
        tensors[item.name] = WireTensor(arr, dtype, declared=True)
    if "input" not in tensors:
        raise InvalidInput.at(("body", "inputs"), "the input tensor named 'input' is required")
    return req, tensors["input"], tensors.get("h0"), tensors.get("lengths")


def _wants_binary(req: InferRequest, name: str) -> bool:
    default = bool((req.parameters or {}).get("binary_data_output", False))
    for out in req.outputs or []:
        if out.name == name:
            return bool((out.parameters or {}).get("binary_data", default))
    return default


@router.post(
    "/models/{name}/infer",
    summary="Inference (JSON, or the binary tensor data extension)",
    openapi_extra={
        **_NAME_PARAM,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        },
    },
    responses={
        200: {"model": InferResponse, "content": {"application/octet-stream": {}}},
        **_responses(400, 404, 413, 429, 503, 504, 507),
    },
)
@protocol_errors
async def infer(request: Request) -> Response:
    name = request.path_params["name"]
    _check_name(name)
    state = request.state
    registry: Registry = state.registry
    settings: Settings = state.settings
    engine: Engine = state.engine
    started = time.perf_counter()
    entry = registry.get(name)
    raw_length = request.headers.get(HEADER)
    try:
        header_length = int(raw_length) if raw_length is not None else None
    except ValueError:
        raise MalformedBody(
            f"Inference-Header-Content-Length must be an integer, got {raw_length!r}"
        ) from None
    body = await request.body()
    req, x, h0, lengths = parse_infer(
        body, header_length, entry.config, settings.max_tensor_elements
    )
    requested = [o.name for o in req.outputs] if req.outputs else ["output", "h_n"]
    unknown = sorted(set(requested) - {"output", "h_n"})
    if unknown:
        raise InvalidInput.at(
            ("body", "outputs"), f"unknown outputs {unknown}; the model has output and h_n"
        )
    key, source = registered_target(registry, entry)
    sequence = (req.parameters or {}).get("sequence_id")
    if sequence not in (None, 0, ""):  # the sequence extension: a stream held by the server
        store: SessionStore = state.sessions
        params = req.parameters or {}
        session_key = f"oip:{entry.name}:{sequence}"
        if params.get("sequence_start"):
            session = store.open(entry, h0, key=session_key, replace=True)
        else:
            if h0 is not None:
                raise InvalidInput.at(("body", "inputs"), "h0 is only taken with sequence_start")
            try:
                session = store.get(session_key)
            except SessionNotFound:
                raise InvalidInput.at(
                    ("body", "parameters"),
                    f"sequence {sequence!r} is not open: send sequence_start first",
                ) from None
        job = validate_forward(entry.config, x, session.initial_h0, lengths)
        state.metrics.stages.decode.observe(time.perf_counter() - started)
        result = await store.chunk(
            session, entry, job, lambda j: engine.forward(key, source, entry.config, j)
        )
        if params.get("sequence_end"):
            store.close(session_key)
    else:
        job = validate_forward(entry.config, x, h0, lengths)
        state.metrics.stages.decode.observe(time.perf_counter() - started)
        result = await engine.forward(key, source, entry.config, job)

    encode_started = time.perf_counter()
    dtype = entry.config.dtype
    outputs, chunks = [], []
    for out_name in requested:
        arr = result.output if out_name == "output" else result.h_n
        item: dict[str, Any] = {
            "name": out_name,
            "datatype": TO_OIP[dtype],
            "shape": list(arr.shape),
        }
        if _wants_binary(req, out_name):
            raw = np.ascontiguousarray(arr).tobytes()
            item["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            values = bf16_bits_to_f32(arr) if dtype == "bfloat16" else arr
            item["data"] = np.ascontiguousarray(values).reshape(-1)
        outputs.append(item)
    answer: dict[str, Any] = {"model_name": entry.name, "model_version": "1", "outputs": outputs}
    if req.id is not None:
        answer["id"] = req.id
    head = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    state.metrics.stages.encode.observe(time.perf_counter() - encode_started)
    if not chunks:
        return Response(head, media_type="application/json")
    return Response(
        b"".join([head, *chunks]),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(head))},
    )


__all__ = ["ErrorBody", "router"]

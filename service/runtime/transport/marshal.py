"""What crosses the engine socket, both ways: tensor sizes and output shapes, session views,
exported states (a header and the tensors' bytes), and domain errors (by class name, rebuilt on
the other side; anything unknown becomes a plain ServiceError)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from service.core import errors
from service.core.errors import ServiceError
from service.core.schemas.config import DType, RNNConfig
from service.engine.backend import SessionView
from service.engine.job import ForwardJob, ForwardResult
from service.engine.state import SessionState
from service.engine.tensor import CARRIER
from service.runtime.transport.frames import Header


def carrier(dtype: DType) -> np.dtype[Any]:
    return CARRIER[dtype]


def nbytes(dtype: DType, shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64)) * carrier(dtype).itemsize


def output_shapes(config: RNNConfig, job: ForwardJob) -> list[tuple[int, ...]]:
    """The shapes of output, h_n (c_n for LSTM, the head's output for a model with a head) a
    job will answer, known before it runs."""
    rows = config.state_rows
    out: tuple[int, ...]
    states: list[tuple[int, ...]]
    if job.batched:
        out = (job.batch, job.seq_len) if config.batch_first else (job.seq_len, job.batch)
        states = [(rows, job.batch, size) for size in config.state_sizes]
    else:
        out = (job.seq_len,)
        states = [(rows, size) for size in config.state_sizes]
    shapes = [(*out, config.output_size), *states]
    if config.head is not None:
        k = config.head.out_features
        last = (job.batch, k) if job.batched else (k,)
        shapes.append((*out, k) if config.head.on == "every_step" else last)
    return shapes


def result_arrays(result: ForwardResult) -> list[np.ndarray[Any, Any]]:
    """A result's arrays in `output_shapes`' order."""
    extra = [a for a in (result.c_n, result.head) if a is not None]
    return [result.output, result.h_n, *extra]


def result_of(
    config: RNNConfig, arrays: list[np.ndarray[Any, Any]], batch_sequences: int, queue_s: float,
    compute_s: float,
) -> ForwardResult:  # fmt: skip
    """`result_arrays`' inverse."""
    c_n = arrays[2] if config.has_cell else None
    head = arrays[-1] if config.head is not None else None
    return ForwardResult(
        arrays[0], arrays[1], c_n, None, batch_sequences, queue_s, compute_s, head=head
    )


def error_header(exc: ServiceError) -> Header:
    return {
        "err": type(exc).__name__,
        "detail": exc.detail,
        "errors": [[list(e.loc), e.msg] for e in exc.errors],
        "retry_after": getattr(exc, "retry_after", None),
        "ext": exc.extensions,
    }


def error_of(header: Header) -> ServiceError:
    cls = getattr(errors, str(header["err"]), None)
    if not (isinstance(cls, type) and issubclass(cls, ServiceError)):
        cls = ServiceError
    exc = cls.__new__(cls)
    fields = [errors.FieldError(tuple(loc), msg) for loc, msg in header["errors"]]
    ServiceError.__init__(exc, header["detail"], fields)
    if header.get("ext"):
        exc.extensions = dict(header["ext"])
    if header.get("retry_after") is not None:
        exc.retry_after = float(header["retry_after"])  # type: ignore[attr-defined]
    return exc


def view(header: Header) -> SessionView:
    v = header["session"]
    return SessionView(v["id"], v["model"], v["steps"], v["batch"], v["expires"])


def view_header(view: SessionView) -> Header:
    return {"id": view.id, "model": view.model, "steps": view.steps, "batch": view.batch_size,
            "expires": view.expires_at}  # fmt: skip


def state_frame(state: SessionState) -> tuple[Header, bytes]:
    """A state as a header (tags, tensor shapes) and a payload (its tensors' bytes)."""
    parts = [np.ascontiguousarray(p) for p in state.parts]
    header = {
        "model": state.model, "digest": state.weights_digest, "mode": state.mode,
        "dtype": state.dtype, "steps": state.steps, "batched": state.batched,
        "batch": state.batch, "shapes": [list(p.shape) for p in parts],
    }  # fmt: skip
    return header, b"".join(p.tobytes() for p in parts)


def state_of(h: Header, payload: bytes) -> SessionState:
    dtype = carrier(h["dtype"])
    parts, at = [], 0
    for shape in h["shapes"]:
        n = nbytes(h["dtype"], shape)
        parts.append(np.frombuffer(payload, dtype, n // dtype.itemsize, at).reshape(shape).copy())
        at += n
    return SessionState(
        h["model"], h["digest"], h["mode"], h["dtype"], h["steps"], tuple(parts), h["batched"],
        h["batch"],
    )  # fmt: skip

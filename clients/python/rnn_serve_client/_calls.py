"""The calls themselves, protocol-level and transport-free: each names its method, URL, body and
how to read the answer, so the sync and async clients run the same calls."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
import numpy as np

from rnn_serve_client._errors import (
    _raise_for,
)
from rnn_serve_client._wire import (
    _as_numpy,
    _Infer,
    _weights_bytes,
    b64_tensor,
    from_b64_tensor,
)

T = TypeVar("T")


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One operation, transport-free: the request to make and how to read its answer. The sync
    and async clients differ only in how they send it."""

    method: str
    url: str
    parse: Callable[[httpx.Response], T]
    kwargs: dict[str, Any] = field(default_factory=dict)
    # safe to send again when its answer is lost (reads, deletes, session opens: an open whose
    # answer was lost leaves a session nobody uses, which expires)
    resend: bool = False

    @property
    def resendable(self) -> bool:
        return self.resend or self.method in ("GET", "DELETE")


def _forward(
    model: str, input: Any, hx: Any, lengths: Any, dtype: str | None
) -> _Call[tuple[Any, Any]]:
    infer = _Infer(input, hx, lengths, dtype)
    content, headers = infer.encode()
    kwargs = {"content": content, "headers": headers}
    return _Call("POST", f"/v2/models/{model}/infer", infer.decode, kwargs)


def _json_dict(response: httpx.Response) -> dict[str, Any]:
    return dict(response.json())


def _register(name: str, config: Mapping[str, Any]) -> _Call[dict[str, Any]]:
    body = {"name": name, "config": dict(config)}
    return _Call("POST", "/v1/models", _json_dict, {"json": body})


def _upload(name: str, weights: Any) -> _Call[dict[str, Any]]:
    kwargs = {
        "content": _weights_bytes(weights),
        "headers": {"Content-Type": "application/octet-stream"},
    }
    return _Call("PUT", f"/v1/models/{name}/weights", _json_dict, kwargs)


def _export(name: str) -> _Call[bytes]:
    return _Call("GET", f"/v1/models/{name}/weights", lambda r: r.content)


def _list() -> _Call[list[dict[str, Any]]]:
    return _Call("GET", "/v1/models", lambda r: list(r.json()["models"]))


def _get(name: str) -> _Call[dict[str, Any]]:
    return _Call("GET", f"/v1/models/{name}", _json_dict)


def _delete(name: str) -> _Call[None]:
    return _Call("DELETE", f"/v1/models/{name}", lambda r: None)


# --- sessions -------------------------------------------------------------------------------------
# A chunk carries start_step, so resending it is safe: these answers, and transport errors
# (a timeout, a reset connection, a replica that stopped), are retried.


def _session_info(response: httpx.Response) -> dict[str, Any]:
    return dict(response.json())


def _open(model: str, hx: Any, batch_size: int | None, state: Any) -> _Call[dict[str, Any]]:
    url = f"/v1/models/{model}/sessions"
    if isinstance(state, bytes | bytearray):  # a safetensors export
        kwargs: dict[str, Any] = {
            "content": bytes(state),
            "headers": {"Content-Type": "application/octet-stream"},
        }
        return _Call("POST", url, _session_info, kwargs, resend=True)
    if state is not None:
        return _Call("POST", url, _session_info, {"json": {"state": dict(state)}}, resend=True)
    body: dict[str, Any] = {}
    h0, c0 = hx if isinstance(hx, tuple | list) else (hx, None)
    for name, value in (("h0", h0), ("c0", c0)):
        if value is not None:
            arr, _ = _as_numpy(value)
            body[name] = b64_tensor(arr, str(arr.dtype) if arr.dtype != np.uint16 else "float32")
    if batch_size is not None:
        body["batch_size"] = batch_size
    return _Call("POST", url, _session_info, {"json": body}, resend=True)


def _chunk_body(input: Any, lengths: Any, start_step: int) -> tuple[dict[str, Any], bool]:
    arr, was_torch = _as_numpy(input)
    dtype = str(arr.dtype) if arr.dtype in (np.float16, np.float32, np.float64) else "float32"
    body: dict[str, Any] = {
        "input": b64_tensor(arr, dtype),
        "output_encoding": "b64",
        "start_step": start_step,
    }
    if lengths is not None:
        body["lengths"] = [int(n) for n in lengths]
    return body, was_torch


def _chunk_answer(response: httpx.Response, torch_out: bool) -> tuple[Any, Any, int]:
    """(output, h_n or (h_n, c_n), steps) of a chunk's answer."""
    body = response.json()
    found: dict[str, Any] = {
        k: from_b64_tensor(body[k]) for k in ("output", "h_n", "c_n") if body.get(k)
    }
    if torch_out:
        import torch

        found = {k: torch.from_numpy(v.copy()) for k, v in found.items()}
    hx = (found["h_n"], found["c_n"]) if "c_n" in found else found["h_n"]
    return found["output"], hx, int(body["steps"])


def _sequence_infer(
    sequence_id: str | int, input: Any, hx: Any, lengths: Any, params: dict[str, Any]
) -> tuple[_Infer, dict[str, Any]]:
    infer = _Infer(input, hx, lengths, None, {"sequence_id": sequence_id, **params})
    content, headers = infer.encode()
    # the header a load balancer hashes a sequence on (the body's id is out of its reach)
    headers["X-Sequence-ID"] = str(sequence_id)
    return infer, {"content": content, "headers": headers}


class _SessionBase:
    """What both clients' sessions hold, and the calls they make (sent by their client)."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.id: str = info["session_id"]
        self.model: str = info["model"]
        self.steps: int = int(info["steps"])
        self.batch_size: int | None = info.get("batch_size")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r}, model={self.model!r}, steps={self.steps})"

    def _chunk(self, input: Any, lengths: Any) -> tuple[str, dict[str, Any], bool]:
        body, torch_out = _chunk_body(input, lengths, self.steps)
        return f"/v1/sessions/{self.id}/forward", {"json": body}, torch_out

    def _answered(self, response: httpx.Response, torch_out: bool) -> tuple[Any, Any]:
        _raise_for(response)
        output, hx, self.steps = _chunk_answer(response, torch_out)
        return output, hx

    def _export_call(self, format: str) -> _Call[Any]:
        parse: Callable[[httpx.Response], Any] = (
            (lambda r: r.content) if format == "safetensors" else _json_dict
        )
        return _Call("GET", f"/v1/sessions/{self.id}/state", parse, {"params": {"format": format}})

    def _fork_call(self) -> _Call[dict[str, Any]]:
        return _Call("POST", f"/v1/sessions/{self.id}/fork", _session_info, resend=True)

    def _close_call(self) -> _Call[None]:
        return _Call("DELETE", f"/v1/sessions/{self.id}", lambda r: None)


class _SequenceBase:
    """What both clients' OIP sequences share: the parameters of each chunk, and its answer."""

    def __init__(self, model: str, sequence_id: str | int) -> None:
        self.model, self.id = model, sequence_id
        self.steps = 0
        self._started = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.model} {self.id!r} at step {self.steps}>"

    def _request(
        self, input: Any, hx: Any, lengths: Any, end: bool
    ) -> tuple[_Infer, str, dict[str, Any]]:
        params: dict[str, Any] = {"start_step": self.steps}
        if not self._started:
            params["sequence_start"] = True
        if end:
            params["sequence_end"] = True
        infer, kwargs = _sequence_infer(self.id, input, hx, lengths, params)
        return infer, f"/v2/models/{self.model}/infer", kwargs

    def _answered(self, infer: _Infer, response: httpx.Response) -> tuple[Any, Any]:
        _raise_for(response)
        self._started = True
        output, out_hx = infer.decode(response)
        self.steps = int(infer.head["parameters"]["sequence_steps"])
        return output, out_hx

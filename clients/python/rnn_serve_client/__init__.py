"""A Python client for rnn-serve, sync (`Client`) and async (`AsyncClient`), on httpx.

Its own distribution (`pip install ./clients/python`): httpx, numpy and tenacity only; torch
tensors work when torch is installed, and are never needed.

    from rnn_serve_client import Client
    with Client("http://127.0.0.1:8000", api_key="...") as rnn:   # api_key: if the server has keys
        output, h_n = rnn.forward("default", x, h0)      # numpy in -> numpy out, torch -> torch
        output, (h_n, c_n) = rnn.forward("my-lstm", x, (h0, c0))   # LSTMs, as torch returns them

Forwards use the Open Inference Protocol's binary tensor extension by default (raw bytes, no
JSON numbers either way). Connection errors and 429/503 answers are retried (tenacity) with
exponential backoff and jitter, honouring Retry-After; errors raise typed exceptions carrying the
server's detail. `live()`, `ready()`, `server_metadata()` and `model_metadata()` ask the server
about itself; `api_key=` and `headers=` go with every call.

Streaming sessions (the server holds the state between chunks):

    with rnn.open_session("default") as s:            # or hx=h0, batch_size=N, state=exported
        out1, h1 = s.forward(x[:10])                   # exactly once, retried safely
        saved = s.export()                             # safetensors bytes: keep it somewhere
        branch = s.fork()                              # a copy of the state, its own stream
    s2 = rnn.open_session("default", state=saved)      # resumes at the exported step

Each chunk carries the step it expects to start at (`start_step`), so a chunk whose answer was
lost (a timeout, a connection reset, a replica that stopped) is resent and applied once: the
server answers a resent chunk from the answer it kept. A session whose replica was killed
raises `SessionLost` (410): resume it from a state you exported. OIP sequences:
`rnn.sequence("default", "my-id")` streams over the Open Inference Protocol with the same retries.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
import numpy as np
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
)

__all__ = [
    "AsyncClient",
    "AsyncSession",
    "BadRequest",
    "Client",
    "Conflict",
    "NotFound",
    "Overloaded",
    "RNNServeError",
    "Sequence",
    "ServerError",
    "Session",
    "SessionLost",
    "StepConflict",
    "Unauthorized",
    "b64_tensor",
    "from_b64_tensor",
]

_NP: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "FP16": np.dtype("<f2"),
    "FP64": np.dtype("<f8"),
    "BF16": np.dtype("<u2"),  # bfloat16 travels as its bit patterns
}
_OIP: dict[np.dtype[Any], str] = {
    np.dtype("float32"): "FP32",
    np.dtype("float16"): "FP16",
    np.dtype("float64"): "FP64",
}


def b64_tensor(array: Any, dtype: str = "float32") -> dict[str, Any]:
    """An array as the v1 API's base64 tensor form (raw little-endian, row-major bytes)."""
    a = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
    return {"shape": list(a.shape), "dtype": dtype, "b64": base64.b64encode(a.tobytes()).decode()}


def from_b64_tensor(wire: Mapping[str, Any]) -> np.ndarray[Any, Any]:
    """A v1 base64 tensor (float16/32/64) back to an array."""
    raw = base64.b64decode(str(wire["b64"]))
    dtype = np.dtype(str(wire["dtype"])).newbyteorder("<")
    return np.frombuffer(raw, dtype=dtype).reshape(wire["shape"])


class RNNServeError(Exception):
    """An error answer. `status` is the HTTP status; `detail` the server's words; `body` all."""

    def __init__(self, status: int, detail: str, body: Any = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail, self.body = status, detail, body


class BadRequest(RNNServeError):
    """400, 413, 415 or 422: the request is invalid; `body["errors"]` names the fields (v1)."""


class Unauthorized(RNNServeError):
    """401 or 403: no valid API key, or one without the scope this call needs."""


class NotFound(RNNServeError):
    """404: no such model."""


class Conflict(RNNServeError):
    """409: the name is taken by another config."""


class StepConflict(Conflict):
    """409 from a session: the chunk expected another step; `current_step` is the session's."""

    @property
    def current_step(self) -> int | None:
        return self.body.get("current_step") if isinstance(self.body, dict) else None


class SessionLost(RNNServeError):
    """410: the session was held in the memory of a server that has restarted since.
    Resume with `open_session(model, state=...)` from a state you exported."""


class Overloaded(RNNServeError):
    """429 or 503 still after the retries."""


class ServerError(RNNServeError):
    """5xx other than 503."""


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body = response.json()
        detail = body.get("detail") or body.get("error") or response.text
    except ValueError:
        body, detail = None, response.text
    status = response.status_code
    cls: type[RNNServeError] = ServerError
    if status in (400, 413, 415, 422):
        cls = BadRequest
    elif status in (401, 403):
        cls = Unauthorized
    elif status == 404:
        cls = NotFound
    elif status == 409:
        cls = StepConflict if isinstance(body, dict) and "current_step" in body else Conflict
    elif status == 410:
        cls = SessionLost
    elif status in (429, 503):
        cls = Overloaded
    elif status < 500:
        cls = RNNServeError
    raise cls(status, str(detail), body)


def _as_numpy(value: Any) -> tuple[np.ndarray[Any, Any], bool]:
    """(array, was_torch): torch tensors are converted (bfloat16 through its bits)."""
    if type(value).__module__.startswith("torch"):
        import torch

        t = value.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(np.uint16), True
        return t.numpy(), True
    return np.ascontiguousarray(value), False


@dataclass
class _Infer:
    """A forward as an OIP binary request, and the decoding of its answer."""

    input: Any
    hx: Any = None  # h0, or (h0, c0) for an LSTM
    lengths: Any = None
    dtype: str | None = None  # OIP datatype, e.g. "BF16"; default from the input's dtype
    parameters: dict[str, Any] = field(default_factory=dict)  # e.g. the sequence extension's
    torch_out: bool = field(default=False, init=False)
    head: dict[str, Any] = field(default_factory=dict, init=False)  # the last answer's JSON head

    def encode(self) -> tuple[bytes, dict[str, str]]:
        inputs, chunks = [], []
        h0, c0 = self.hx if isinstance(self.hx, tuple | list) else (self.hx, None)
        for name, value in (("input", self.input), ("h0", h0), ("c0", c0)):
            if value is None:
                continue
            arr, was_torch = _as_numpy(value)
            self.torch_out = self.torch_out or (was_torch and name == "input")
            datatype = self.dtype or ("BF16" if arr.dtype == np.uint16 else _OIP.get(arr.dtype))
            if datatype is None:
                arr, datatype = arr.astype("<f4"), "FP32"
            raw = np.ascontiguousarray(arr, dtype=_NP[datatype]).tobytes()
            inputs.append({"name": name, "shape": list(arr.shape), "datatype": datatype,
                           "parameters": {"binary_data_size": len(raw)}})  # fmt: skip
            chunks.append(raw)
        if self.lengths is not None:
            raw = np.asarray(self.lengths, dtype="<i8").tobytes()
            inputs.append({"name": "lengths", "shape": [len(raw) // 8], "datatype": "INT64",
                           "parameters": {"binary_data_size": len(raw)}})  # fmt: skip
            chunks.append(raw)
        params = {"binary_data_output": True, **self.parameters}
        head = _dumps({"inputs": inputs, "parameters": params})
        headers = {
            "Inference-Header-Content-Length": str(len(head)),
            "Content-Type": "application/octet-stream",
        }
        return b"".join([head, *chunks]), headers

    def decode(self, response: httpx.Response) -> tuple[Any, Any]:
        length = int(response.headers.get("inference-header-content-length", len(response.content)))
        head = self.head = json.loads(response.content[:length])
        offset, found = length, {}
        for out in head["outputs"]:
            dtype = _NP[out["datatype"]]
            if "data" in out:
                json_dtype = dtype if out["datatype"] != "BF16" else np.dtype("<f4")
                arr = np.asarray(out["data"], dtype=json_dtype)
            else:
                size = out["parameters"]["binary_data_size"]
                arr = np.frombuffer(response.content[offset : offset + size], dtype=dtype)
                offset += size
            found[out["name"]] = arr.reshape(out["shape"])
        if self.torch_out:
            import torch

            def tensor(a: np.ndarray[Any, Any]) -> Any:
                t = torch.from_numpy(a.copy())
                return t.view(torch.bfloat16) if a.dtype == np.uint16 else t

            found = {k: tensor(v) for k, v in found.items()}
        # as torch returns them: output, h_n — or output, (h_n, c_n) for an LSTM
        if "c_n" in found:
            return found["output"], (found["h_n"], found["c_n"])
        return found["output"], found["h_n"]


def _weights_bytes(weights: Any) -> bytes:
    if isinstance(weights, bytes | bytearray):
        return bytes(weights)
    if isinstance(weights, str | Path):
        return Path(weights).read_bytes()
    from safetensors.torch import save  # a state_dict

    return save({k: v.detach().cpu().contiguous() for k, v in weights.items()})


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


class _Wait:
    """tenacity's wait: the answer's Retry-After if it has one (at most 30 s), else exponential
    backoff with jitter."""

    def __init__(self, backoff: float) -> None:
        self.backoff = backoff

    def __call__(self, state: RetryCallState) -> float:
        outcome = state.outcome
        if outcome is not None and not outcome.failed:
            retry_after = outcome.result().headers.get("retry-after")
            if retry_after is not None:
                try:
                    return min(float(retry_after), 30.0)
                except ValueError:
                    pass
        attempt = state.attempt_number - 1
        return float(self.backoff * 2**attempt * (0.5 + random.random() / 2))


def _sleep(seconds: float) -> None:
    time.sleep(seconds)  # looked up at each call: tests replace time.sleep


async def _asleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def _last(state: RetryCallState) -> Any:
    """Out of tries: the last answer (its error is raised by its status), or its exception."""
    assert state.outcome is not None
    return state.outcome.result()


# What is retried: connection errors (nothing was answered; every call here may be sent again:
# forwards have no side effects, registrations and uploads are idempotent) and these statuses.
_BUSY = (429, 503)


class _Base:
    def __init__(self, retries: int, backoff: float, stream_retries: int = 8) -> None:
        self.retries = retries
        self.backoff = backoff
        # session chunks are resent more patiently: a replica restarting, or the session
        # store failing over, takes seconds
        self.stream_retries = stream_retries

    def _policy(self, resend: bool) -> dict[str, Any]:
        statuses = _RESEND if resend else _BUSY
        attempts = (self.stream_retries if resend else self.retries) + 1
        return {
            "stop": stop_after_attempt(attempts),
            "retry": retry_if_exception_type(httpx.TransportError)
            | retry_if_result(lambda r: r.status_code in statuses),
            "wait": _Wait(self.backoff),
            "retry_error_callback": _last,
        }


def _headers(api_key: str | None, headers: Mapping[str, str] | None) -> dict[str, str]:
    """The headers every call carries: the API key, and any the caller adds."""
    out = dict(headers or {})
    if api_key is not None:
        out["Authorization"] = f"Bearer {api_key}"
    return out


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
_RESEND = (429, 502, 503, 504)


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


class Session(_SessionBase):
    """A streaming session (sync): `forward` feeds the next chunk; the server holds the state.
    Chunks are exactly-once: each says the step it starts at, and is resent on a lost answer."""

    def __init__(self, client: Client, info: dict[str, Any]) -> None:
        super().__init__(info)
        self._client = client

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def forward(self, input: Any, lengths: Any = None) -> tuple[Any, Any]:
        """The next chunk: `output, h_n` (or `output, (h_n, c_n)`) as torch returns them."""
        url, kwargs, torch_out = self._chunk(input, lengths)
        return self._answered(self._client._resend("POST", url, kwargs), torch_out)

    def export(self, format: str = "safetensors") -> Any:
        """The state, tagged with the model, its weights digest and the step count: bytes (a
        safetensors file), or with format="json" a dict. Open a session with it to resume."""
        return self._client._do(self._export_call(format))

    def fork(self) -> Session:
        """A new session with a copy of this one's state and step count."""
        return Session(self._client, self._client._do(self._fork_call()))

    def info(self) -> dict[str, Any]:
        return self._client._do(_Call("GET", f"/v1/sessions/{self.id}", _session_info))

    def close(self) -> None:
        """End the session (idempotent: a session already gone is not an error)."""
        with contextlib.suppress(NotFound, SessionLost):
            self._client._do(self._close_call())


class Sequence:
    """An OIP sequence (sync): the same stream over /v2/models/{name}/infer's sequence
    parameters, with its id in the X-Sequence-ID header for the load balancer."""

    def __init__(self, client: Client, model: str, sequence_id: str | int) -> None:
        self._client, self.model, self.id = client, model, sequence_id
        self.steps = 0
        self._started = False

    def forward(
        self, input: Any, hx: Any = None, lengths: Any = None, *, end: bool = False
    ) -> tuple[Any, Any]:
        """The next chunk (`hx`: an initial state, first chunk only); `end` closes the
        sequence after it."""
        params: dict[str, Any] = {"start_step": self.steps}
        if not self._started:
            params["sequence_start"] = True
        if end:
            params["sequence_end"] = True
        infer, kwargs = _sequence_infer(self.id, input, hx, lengths, params)
        response = self._client._resend("POST", f"/v2/models/{self.model}/infer", kwargs)
        _raise_for(response)
        self._started = True
        output, out_hx = infer.decode(response)
        self.steps = int(infer.head["parameters"]["sequence_steps"])
        return output, out_hx


class Client(_Base):
    """Synchronous client."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.1,
        stream_retries: int = 8,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(retries, backoff, stream_retries)
        self._http = httpx.Client(
            base_url=base_url,
            timeout=timeout,
            transport=transport,
            headers=_headers(api_key, headers),
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _do(self, call: _Call[T]) -> T:
        retrying = Retrying(sleep=_sleep, **self._policy(call.resendable))
        response: httpx.Response = retrying(
            self._http.request, call.method, call.url, **call.kwargs
        )
        _raise_for(response)
        return call.parse(response)

    def forward(
        self,
        model: str,
        input: Any,
        hx: Any = None,
        lengths: Any = None,
        *,
        dtype: str | None = None,
    ) -> tuple[Any, Any]:
        """`output, h_n` as `torch.nn.RNN` / `nn.GRU` would return them, or `output, (h_n, c_n)`
        as `nn.LSTM` would (numpy, or torch for torch input). `hx` is h0, or (h0, c0) for an
        LSTM; `lengths` runs the batch as packed sequences."""
        return self._do(_forward(model, input, hx, lengths, dtype))

    def register(self, name: str, config: Mapping[str, Any]) -> dict[str, Any]:
        return self._do(_register(name, config))

    def upload_weights(self, name: str, weights: Any) -> dict[str, Any]:
        """`weights`: a state_dict, safetensors bytes, or a path to a .safetensors file."""
        return self._do(_upload(name, weights))

    def export_weights(self, name: str) -> bytes:
        return self._do(_export(name))

    def list_models(self) -> list[dict[str, Any]]:
        return self._do(_list())

    def get_model(self, name: str) -> dict[str, Any]:
        return self._do(_get(name))

    def delete_model(self, name: str) -> None:
        self._do(_delete(name))

    def _resend(self, method: str, url: str, kwargs: dict[str, Any]) -> httpx.Response:
        """A request that is safe to resend (an exactly-once chunk), resent on transport
        errors and on 429/502/503/504 with backoff."""
        retrying = Retrying(sleep=_sleep, **self._policy(True))
        response: httpx.Response = retrying(self._http.request, method, url, **kwargs)
        return response

    # --- the server itself ------------------------------------------------------------------
    def live(self) -> bool:
        """Whether the server answers (GET /v2/health/live); False if it cannot be reached."""
        try:
            return self._http.get("/v2/health/live").status_code == 200
        except httpx.TransportError:
            return False

    def ready(self) -> bool:
        """Whether it serves (GET /v2/health/ready: its default model is warm, not draining)."""
        try:
            return self._http.get("/v2/health/ready").status_code == 200
        except httpx.TransportError:
            return False

    def server_metadata(self) -> dict[str, Any]:
        """Name, version and the protocol extensions it speaks (GET /v2)."""
        return self._do(_Call("GET", "/v2", _json_dict))

    def model_metadata(self, name: str) -> dict[str, Any]:
        """The model's inputs and outputs, datatypes and shapes (GET /v2/models/{name})."""
        return self._do(_Call("GET", f"/v2/models/{name}", _json_dict))

    def open_session(
        self,
        model: str = "default",
        hx: Any = None,
        *,
        batch_size: int | None = None,
        state: Any = None,
    ) -> Session:
        """Open a streaming session: from zeros, from `hx` (h0, or (h0, c0) for an LSTM), or
        resuming `state` (what `Session.export` returned: bytes or a dict)."""
        return Session(self, self._do(_open(model, hx, batch_size, state)))

    def session(self, session_id: str) -> Session:
        """A handle on an open session (e.g. one opened by another process)."""
        return Session(self, self._do(_Call("GET", f"/v1/sessions/{session_id}", _session_info)))

    def sequence(self, model: str, sequence_id: str | int) -> Sequence:
        """An OIP sequence on `model` (opened by its first forward)."""
        return Sequence(self, model, sequence_id)


class AsyncClient(_Base):
    """Asynchronous client; the same methods, awaited."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.1,
        stream_retries: int = 8,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(retries, backoff, stream_retries)
        self._http = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            transport=transport,
            headers=_headers(api_key, headers),
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _do(self, call: _Call[T]) -> T:
        retrying = AsyncRetrying(sleep=_asleep, **self._policy(call.resendable))
        response: httpx.Response = await retrying(
            self._http.request, call.method, call.url, **call.kwargs
        )
        _raise_for(response)
        return call.parse(response)

    async def forward(
        self,
        model: str,
        input: Any,
        hx: Any = None,
        lengths: Any = None,
        *,
        dtype: str | None = None,
    ) -> tuple[Any, Any]:
        return await self._do(_forward(model, input, hx, lengths, dtype))

    async def register(self, name: str, config: Mapping[str, Any]) -> dict[str, Any]:
        return await self._do(_register(name, config))

    async def upload_weights(self, name: str, weights: Any) -> dict[str, Any]:
        return await self._do(_upload(name, weights))

    async def export_weights(self, name: str) -> bytes:
        return await self._do(_export(name))

    async def list_models(self) -> list[dict[str, Any]]:
        return await self._do(_list())

    async def get_model(self, name: str) -> dict[str, Any]:
        return await self._do(_get(name))

    async def delete_model(self, name: str) -> None:
        await self._do(_delete(name))

    async def _resend(self, method: str, url: str, kwargs: dict[str, Any]) -> httpx.Response:
        retrying = AsyncRetrying(sleep=_asleep, **self._policy(True))
        response: httpx.Response = await retrying(self._http.request, method, url, **kwargs)
        return response

    async def live(self) -> bool:
        try:
            return (await self._http.get("/v2/health/live")).status_code == 200
        except httpx.TransportError:
            return False

    async def ready(self) -> bool:
        try:
            return (await self._http.get("/v2/health/ready")).status_code == 200
        except httpx.TransportError:
            return False

    async def server_metadata(self) -> dict[str, Any]:
        return await self._do(_Call("GET", "/v2", _json_dict))

    async def model_metadata(self, name: str) -> dict[str, Any]:
        return await self._do(_Call("GET", f"/v2/models/{name}", _json_dict))

    async def open_session(
        self,
        model: str = "default",
        hx: Any = None,
        *,
        batch_size: int | None = None,
        state: Any = None,
    ) -> AsyncSession:
        return AsyncSession(self, await self._do(_open(model, hx, batch_size, state)))

    async def session(self, session_id: str) -> AsyncSession:
        call = _Call("GET", f"/v1/sessions/{session_id}", _session_info)
        return AsyncSession(self, await self._do(call))


class AsyncSession(_SessionBase):
    """A streaming session (async): the same calls as `Session`, awaited."""

    def __init__(self, client: AsyncClient, info: dict[str, Any]) -> None:
        super().__init__(info)
        self._client = client

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def forward(self, input: Any, lengths: Any = None) -> tuple[Any, Any]:
        url, kwargs, torch_out = self._chunk(input, lengths)
        return self._answered(await self._client._resend("POST", url, kwargs), torch_out)

    async def export(self, format: str = "safetensors") -> Any:
        return await self._client._do(self._export_call(format))

    async def fork(self) -> AsyncSession:
        return AsyncSession(self._client, await self._client._do(self._fork_call()))

    async def close(self) -> None:
        with contextlib.suppress(NotFound, SessionLost):
            await self._client._do(self._close_call())

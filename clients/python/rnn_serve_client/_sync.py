"""The synchronous client: `Client`, its `Session` and `Sequence`."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import httpx
from tenacity import (
    Retrying,
)

from rnn_serve_client._calls import (
    T,
    _Call,
    _delete,
    _export,
    _forward,
    _get,
    _json_dict,
    _list,
    _open,
    _register,
    _SequenceBase,
    _session_info,
    _SessionBase,
    _upload,
)
from rnn_serve_client._errors import (
    NotFound,
    SessionLost,
    _raise_for,
)
from rnn_serve_client._retry import _Base, _headers, _sleep


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
        """The session as the server has it now: its model, steps, batch and expiry."""
        return self._client._do(_Call("GET", f"/v1/sessions/{self.id}", _session_info))

    def close(self) -> None:
        """End the session (idempotent: a session already gone is not an error)."""
        with contextlib.suppress(NotFound, SessionLost):
            self._client._do(self._close_call())


class Sequence(_SequenceBase):
    """An OIP sequence (sync): the same stream over /v2/models/{name}/infer's sequence
    parameters, with its id in the X-Sequence-ID header for the load balancer."""

    def __init__(self, client: Client, model: str, sequence_id: str | int) -> None:
        super().__init__(model, sequence_id)
        self._client = client

    def forward(
        self, input: Any, hx: Any = None, lengths: Any = None, *, end: bool = False
    ) -> tuple[Any, Any]:
        """The next chunk (`hx`: an initial state, first chunk only); `end` closes the
        sequence after it."""
        infer, url, kwargs = self._request(input, hx, lengths, end)
        return self._answered(infer, self._client._resend("POST", url, kwargs))


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
        """Register `name` with `config` (seeded weights until some are uploaded); the same
        config again is a no-op, another one a `Conflict`."""
        return self._do(_register(name, config))

    def upload_weights(self, name: str, weights: Any) -> dict[str, Any]:
        """`weights`: a state_dict, safetensors bytes, or a path to a .safetensors file."""
        return self._do(_upload(name, weights))

    def export_weights(self, name: str) -> bytes:
        """The model's current weights: the safetensors file, byte for byte."""
        return self._do(_export(name))

    def list_models(self) -> list[dict[str, Any]]:
        """Every registered model, with its config."""
        return self._do(_list())

    def get_model(self, name: str) -> dict[str, Any]:
        """A registered model: its config, version and whether it is built."""
        return self._do(_get(name))

    def delete_model(self, name: str) -> None:
        """Delete a model (its sessions end with it)."""
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

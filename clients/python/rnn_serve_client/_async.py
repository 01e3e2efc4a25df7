"""The asynchronous client: `AsyncClient`, its `AsyncSession` and `AsyncSequence`; the same
methods as the synchronous client's, awaited (a test keeps the two surfaces equal)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
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
from rnn_serve_client._retry import _asleep, _Base, _headers
from rnn_serve_client._sync import Client, Sequence, Session


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

    def sequence(self, model: str, sequence_id: str | int) -> AsyncSequence:
        """An OIP sequence on `model` (opened by its first forward)."""
        return AsyncSequence(self, model, sequence_id)


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

    async def info(self) -> dict[str, Any]:
        return await self._client._do(_Call("GET", f"/v1/sessions/{self.id}", _session_info))

    async def export(self, format: str = "safetensors") -> Any:
        return await self._client._do(self._export_call(format))

    async def fork(self) -> AsyncSession:
        return AsyncSession(self._client, await self._client._do(self._fork_call()))

    async def close(self) -> None:
        with contextlib.suppress(NotFound, SessionLost):
            await self._client._do(self._close_call())


class AsyncSequence(_SequenceBase):
    """An OIP sequence (async): the same stream as `Sequence`, awaited."""

    def __init__(self, client: AsyncClient, model: str, sequence_id: str | int) -> None:
        super().__init__(model, sequence_id)
        self._client = client

    async def forward(
        self, input: Any, hx: Any = None, lengths: Any = None, *, end: bool = False
    ) -> tuple[Any, Any]:
        """The next chunk (`hx`: an initial state, first chunk only); `end` closes the
        sequence after it."""
        infer, url, kwargs = self._request(input, hx, lengths, end)
        return self._answered(infer, await self._client._resend("POST", url, kwargs))


def _same_docs(sync: type, asynchronous: type) -> None:
    """Each async method says what its sync twin says (it does the same, awaited)."""
    for name in dir(sync):
        if name.startswith("_") or not hasattr(asynchronous, name):
            continue
        method = getattr(asynchronous, name)
        if callable(method) and not method.__doc__:
            method.__doc__ = getattr(sync, name).__doc__


for _pair in ((Client, AsyncClient), (Session, AsyncSession), (Sequence, AsyncSequence)):
    _same_docs(*_pair)

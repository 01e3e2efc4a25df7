"""Reading JSON bodies: content type, size (see middleware), orjson, and envelope validation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from service.errors import FieldError, InvalidInput, Loc, MalformedBody, UnsupportedMediaType

M = TypeVar("M", bound=BaseModel)


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def read_json(request: Request) -> tuple[Any, bytes]:
    """The parsed body and its raw bytes. 415 unless JSON, 400 unless parseable."""
    content_type = request.headers.get("content-type")
    if not is_json(content_type):
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {content_type or 'none'}"
        )
    body = await request.body()
    try:
        return orjson.loads(body), body
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"the body is not valid JSON: {exc}") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def field_errors(items: Iterable[Mapping[str, Any]], prefix: Loc) -> list[FieldError]:
    """pydantic error dicts -> FieldErrors saying what was expected and what came."""
    out = []
    for err in items:
        ctx = err.get("ctx") or {}
        if err["type"] == "value_error" and "error" in ctx:
            msg = str(ctx["error"])
        elif err["type"] in ("missing", "extra_forbidden", "json_invalid"):
            msg = err["msg"]
        else:
            msg = f"{err['msg']}, got {_short(err.get('input'))}"
        out.append(FieldError((*prefix, *err["loc"]), msg))
    return out


def parse(model: type[M], obj: Any, prefix: Loc = ("body",)) -> M:
    """Validate a parsed body's envelope; every problem becomes one FieldError."""
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        errs = field_errors(exc.errors(include_url=False), prefix)
        detail = "; ".join(f"{'.'.join(map(str, x.loc))}: {x.msg}" for x in errs)
        raise InvalidInput(detail, errs) from None


def may_hide_bools(body: bytes, known: int) -> bool:
    """Whether a JSON boolean could sit inside a tensor: more `true`/`false` tokens in the raw
    body than the `known` booleans of the envelope. Lets the common case skip a Python scan."""
    return body.count(b"true") + body.count(b"false") > known

"""JSON bodies and their envelopes: orjson parsing, pydantic validation of everything but the
tensor elements, and the one conversion of pydantic's errors into field errors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from service.core.errors import FieldError, InvalidInput, Loc, MalformedBody

M = TypeVar("M", bound=BaseModel)


def loads(body: bytes, what: str = "the body") -> Any:
    """Parsed JSON, or 400."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"{what} is not valid JSON: {exc}") from None


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


def invalid(items: Iterable[Mapping[str, Any]], prefix: Loc) -> InvalidInput:
    """One 422 for all of pydantic's errors, each at its field."""
    errs = field_errors(items, prefix)
    return InvalidInput("; ".join(f"{'.'.join(map(str, x.loc))}: {x.msg}" for x in errs), errs)


def parse(model: type[M], obj: Any, prefix: Loc = ("body",)) -> M:
    """Validate a parsed body's envelope; every problem becomes one FieldError."""
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise invalid(exc.errors(include_url=False), prefix) from None


def may_hide_bools(body: bytes, known: int) -> bool:
    """Whether a JSON boolean could sit inside a tensor: more `true`/`false` tokens in the raw
    body than the `known` booleans of the envelope. Lets the common case skip a Python scan."""
    if b"r" not in body and b"a" not in body:  # (two memchr: neither word can be there)
        return False
    if not known:
        return b"true" in body or b"false" in body
    return body.count(b"true") + body.count(b"false") > known

"""A model's manifest in an object store (`service.catalog.objects`): its config and the digest
of its weights, as this version reads it, or why it cannot."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from service.catalog.storage import Version
from service.core.schemas.config import RNNConfig

log = logging.getLogger("rnn_serve.catalog")


@dataclass(frozen=True)
class Manifest:
    config: RNNConfig
    weights: str | None  # sha256 hex of the weights file; None: seeded
    size: int
    etag: str

    @property
    def version(self) -> Version:
        return ((self.etag,), None if self.weights is None else (self.weights,))


@dataclass(frozen=True)
class Unreadable:
    """A manifest this version cannot parse (a newer writer's, a hand edit): its model is
    reported as unreadable, never taken for absent, and the weights it names stay in use."""

    reason: str
    etag: str
    weights: str | None  # the digest it names, if that much could be read
    known: bool  # whether `weights` is known (False: not even JSON; no weights may be removed)

    @property
    def version(self) -> Version:
        return ((self.etag,), None)


def parse_manifest(data: bytes, etag: str, where: str) -> Manifest | Unreadable:
    raw: Any = None
    try:
        raw = orjson.loads(data)
        config = RNNConfig.model_validate(raw["config"])
        return Manifest(config, raw.get("weights"), int(raw.get("size", 0)), etag)
    except (orjson.JSONDecodeError, ValidationError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            reason = "; ".join(
                f"config.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )[:300]
        else:
            reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        log.error(
            "model repository %s: its manifest cannot be read by this version (%s); the model "
            "is reported unreadable and its weights are kept", where, reason,
        )  # fmt: skip
        named = raw.get("weights") if isinstance(raw, dict) else None
        known = isinstance(raw, dict) and (named is None or isinstance(named, str))
        return Unreadable(reason, etag, named if isinstance(named, str) else None, known)

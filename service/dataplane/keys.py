"""API keys with two scopes, checked once for every front end (`Keys.check`).

- `inference`: forwards, sessions, OIP inference and model metadata.
- `admin`: everything `inference` may, plus registering, uploading, exporting and deleting
  models and forwards with inline configs.

Keys come from settings (`RNN_SERVE_INFERENCE_KEYS`, `RNN_SERVE_ADMIN_KEYS`: JSON lists) and from
a file (`RNN_SERVE_API_KEYS_FILE`: one `<scope>:<key>` a line, `#` comments), such as a mounted
secret. Only their SHA-256 digests are kept; a presented key is hashed and compared with every
digest in constant time, so neither timing nor a memory dump gives a key away. With no key
configured the server is open (local use). A front end hands over what the caller presented
(`Authorization: Bearer <key>`, as an HTTP header or as gRPC metadata) and gets the `Caller`.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from service.core.errors import Forbidden, Unauthorized
from service.core.settings import Settings
from service.dataplane.context import Caller

INFERENCE, ADMIN = "inference", "admin"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class Keys:
    def __init__(self, settings: Settings) -> None:
        self._keys: list[tuple[bytes, str]] = []  # (digest, scope)
        for scope, keys in ((INFERENCE, settings.inference_keys), (ADMIN, settings.admin_keys)):
            self._keys += [(_digest(k.get_secret_value()), scope) for k in keys]
        if settings.api_keys_file is not None:
            self._keys += list(_read_file(settings.api_keys_file))
        self.protect_metrics = settings.protect_metrics and self.enabled

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, authorization: str | None, scope: str) -> Caller:
        """The caller (its key id, a digest prefix, owns its sessions; and its scope) for a
        request that needs `scope`, or 401 / 403."""
        if authorization is None:
            raise Unauthorized("this server needs an API key: send Authorization: Bearer <key>")
        kind, _, key = authorization.partition(" ")
        if kind.lower() != "bearer" or not key.strip():
            raise Unauthorized("expected Authorization: Bearer <key>")
        digest = _digest(key.strip())
        granted = None
        for known, known_scope in self._keys:  # every digest, whatever matched: constant time
            if hmac.compare_digest(digest, known):
                granted = known_scope
        if granted is None:
            raise Unauthorized("the API key is not valid")
        if scope == ADMIN and granted != ADMIN:
            raise Forbidden(f"this key has the {granted} scope; this needs the {ADMIN} scope")
        return Caller(digest[:8].hex(), granted)


def _read_file(path: Path) -> list[tuple[bytes, str]]:
    keys = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        scope, sep, key = line.partition(":")
        if not sep or scope.strip() not in (INFERENCE, ADMIN) or not key.strip():
            raise ValueError(f"{path}:{number}: expected '<inference|admin>:<key>'")
        keys.append((_digest(key.strip()), scope.strip()))
    return keys

"""The local cache of an object store's weights files, by digest (`service.catalog.objects`)."""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path

log = logging.getLogger("rnn_serve.catalog")


class WeightsCache:
    """Weights files by digest in a local folder, at most `max_bytes` (least recently used
    evicted); a file whose bytes do not match its digest is dropped, never served."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder, self.max_bytes = folder, max_bytes
        folder.mkdir(parents=True, exist_ok=True)

    def get(self, digest: str) -> bytes | None:
        path = self.folder / digest
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if hashlib.sha256(data).hexdigest() != digest:
            log.warning("model cache: %s did not match its digest; dropped", path)
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # recently used
        return data

    def put(self, digest: str, data: bytes) -> None:
        tmp = self.folder / f".{digest}.{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.folder / digest)
        self._evict()

    def _evict(self) -> None:
        files = []
        for p in self.folder.iterdir():
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            files.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size

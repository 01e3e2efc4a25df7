"""The model repository in object storage: `s3://bucket/prefix` (and `gs://`, `az://`), through
obstore. Endpoint, region and credentials come the standard way (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, web identity on k8s;
`AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint), so MinIO, SeaweedFS, Ceph, R2 and AWS S3 work.

Layout under the prefix:
- `models/<name>/manifest.json`: the model's config and the key, digest and size of its weights;
  switching this one small object is every update, so a reader sees a config with its own
  weights, never another's;
- `weights/<sha256>.safetensors`: weights, content-addressed (never changed once written);
- `meta/generation`: rewritten after every change made through rnn-serve; every replica polls it
  (every `RNN_SERVE_REPOSITORY_RECHECK_S`) and then re-reads the manifests that changed.

Lookups never reach the store: they read an index of the manifests held in memory, kept current
by one background thread. Weights are fetched once into a local cache folder (bounded in bytes,
each file verified by its digest when read), so a restart or a rebuild does not download again.
Weights objects that no manifest names (an upload interrupted before its switch, replaced
weights) are removed once they are old.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from service.catalog.cache import WeightsCache
from service.catalog.credentials import profile_options
from service.catalog.manifest import Manifest, Unreadable, parse_manifest
from service.catalog.storage import CorruptModel, FileStamp, ModelChanged, StoredModel, Version
from service.core.errors import StorageUnavailable
from service.core.schemas.api import MODEL_NAME
from service.core.schemas.config import RNNConfig
from service.core.settings import OBJECT_SCHEMES

log = logging.getLogger("rnn_serve.catalog")
_META = "meta/"
GENERATION = "meta/generation"


def is_object_url(location: str) -> bool:
    return location.startswith(OBJECT_SCHEMES)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class ObjectRepository:
    """`ModelStorage` over an object store (see the module's notes)."""

    def __init__(
        self, url: str, cache: WeightsCache, recheck_s: float = 1.0, store: Any = None
    ) -> None:
        import obstore  # only where an object store is configured
        from obstore.exceptions import AlreadyExistsError, PreconditionError
        from obstore.store import from_url

        self._obstore = obstore
        self._taken = (AlreadyExistsError, PreconditionError)  # a conditional write refused
        self._changed = PreconditionError  # a manifest changed since it was read
        self.url = url
        options: dict[str, Any] = {}
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
        if url.startswith("s3://") and endpoint.startswith("http://"):
            options["client_options"] = {"allow_http": True}
        profile = os.environ.get("AWS_PROFILE")
        if url.startswith("s3://") and profile and "AWS_ACCESS_KEY_ID" not in os.environ:
            options.update(profile_options(profile))
        # fail fast (then 503, and the caller retries) rather than obstore's minutes of retries
        options["retry_config"] = {"max_retries": 2, "retry_timeout": timedelta(seconds=10)}
        self._store = store if store is not None else from_url(url, **options)
        self.cache = cache
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._index: dict[str, Manifest] = {}
        self._unreadable: dict[str, Unreadable] = {}
        self._generation: str | None = None
        self._loaded = False
        self._first = threading.Event()  # set once the first reading of the index has ended
        self._writes = 0  # this replica's writes (a reading of the index made across one is stale)
        self._error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="rnn-repository", daemon=True)
        self._thread.start()

    # --- talking to the store -------------------------------------------------------------------
    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """One store call; NotFound passes as FileNotFoundError, a precondition failure as
        itself, anything else (unreachable, 5xx, credentials) is 503."""
        try:
            return fn(self._store, *args, **kwargs)
        except (FileNotFoundError, *self._taken):
            raise
        except Exception as exc:
            reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise StorageUnavailable(
                f"the model repository {self.url} cannot be reached ({what}: {reason})",
                retry_after=5,
            ) from None

    def _list(self, prefix: str) -> list[dict[str, Any]]:
        """Every object under `prefix` (a folder), read whole inside the call (a listing is a
        stream: its errors come while it is read)."""

        def read(store: Any) -> list[dict[str, Any]]:
            return [meta for batch in self._obstore.list(store, prefix) for meta in batch]

        found: list[dict[str, Any]] = self._call(f"LIST {prefix}", read)
        return found

    def _get(self, key: str) -> tuple[bytes, str]:
        result = self._call(f"GET {key}", self._obstore.get, key)
        return bytes(result.bytes()), str(result.meta.get("e_tag") or "")

    def _put(self, key: str, data: bytes, mode: Any = None) -> str:
        kwargs = {} if mode is None else {"mode": mode}
        put = self._call(f"PUT {key}", self._obstore.put, key, data, **kwargs)
        return str(put.get("e_tag") or "")

    # --- the index of manifests -----------------------------------------------------------------
    def _follow(self) -> None:
        first = True
        while not self._stop.is_set():
            try:
                try:
                    self.refresh()
                except StorageUnavailable:
                    if not first:
                        raise
                    # a new repository: some stores (SeaweedFS) fail a LIST under a prefix that
                    # holds nothing yet; its generation object makes the prefix
                    self._bump()
                    self.refresh()
            except Exception as exc:  # kept serving what it knows; readiness says why
                reason = getattr(exc, "detail", None) or repr(exc)
                if reason != self._error:
                    log.error("model repository %s: %s", self.url, reason)
                self._error = reason
            self._first.set()  # a thread waiting for the first reading is answered its outcome
            first = False
            self._stop.wait(self.recheck_s)

    def refresh(self, force: bool = False) -> None:
        """Re-read the manifests if the generation changed (or `force`). A write of this
        replica's made while they were read makes the reading stale: it is read again."""
        for _ in range(5):
            writes = self._writes
            if self._refresh(force, writes):
                return
            force = True

    def _refresh(self, force: bool, writes: int) -> bool:
        # (a LIST, not a HEAD: some stores answer a HEAD of a missing key with a 500)
        etag = "none"
        for meta in self._list(_META):
            if meta["path"] == GENERATION:
                etag = str(meta.get("e_tag") or meta.get("last_modified"))
        if not force and self._loaded and etag == self._generation:
            return True
        seen: dict[str, str] = {}
        for meta in self._list("models/"):
            parts = str(meta["path"]).split("/")
            if len(parts) == 3 and parts[2] == "manifest.json" and MODEL_NAME.fullmatch(parts[1]):
                seen[parts[1]] = str(meta.get("e_tag") or "")
        index: dict[str, Manifest] = {}
        unreadable: dict[str, Unreadable] = {}
        for name, tag in seen.items():
            known = self._index.get(name) or self._unreadable.get(name)
            if known is None or known.etag != tag:
                try:
                    known = self._read_manifest(name)
                except FileNotFoundError:
                    continue
            if isinstance(known, Manifest):
                index[name] = known
            else:
                unreadable[name] = known
        with self._lock:
            if self._writes != writes:
                return False
            self._index, self._unreadable = index, unreadable
            self._generation, self._loaded = etag, True
            self._error = None
        self._first.set()
        return True

    def _read_manifest(self, name: str) -> Manifest | Unreadable:
        data, etag = self._get(f"models/{name}/manifest.json")
        return parse_manifest(data, etag, f"{self.url}: model {name!r}")

    def _ready_index(self) -> dict[str, Manifest]:
        """The index, without store I/O on the caller's thread: before its first load, a
        thread waits (a while) for the first reading to end, and the event loop is answered 503
        at once; a first reading that failed is 503 with its reason."""
        if not self._loaded and not _on_event_loop():
            self._first.wait(15.0)
        if not self._loaded:
            why = self._error or "its first listing is under way"
            raise StorageUnavailable(
                f"the model repository {self.url} has not been read yet ({why}); retry",
                retry_after=1,
            )
        return self._index

    def _bump(self) -> None:
        etag = self._put(GENERATION, uuid.uuid4().hex.encode())
        with self._lock:  # this replica's index is current: its readers see the change at once
            self._generation = etag
            self._writes += 1

    def _write_index(self, name: str, manifest: Manifest | None) -> None:
        """This replica's own write of a model (None: deleted), in its index at once; a reading
        of the index made across it is read again; then the generation that tells the others."""
        with self._lock:
            index = {k: v for k, v in self._index.items() if k != name}
            if manifest is not None:
                index[name] = manifest
            self._index = index
            self._writes += 1
        self._bump()

    def _learn(self, name: str, found: Manifest | Unreadable) -> None:
        """Another replica's write of a model, read just now, in this index at once (a reading
        of the index made across it is read again; that replica bumped the generation)."""
        with self._lock:
            index = {k: v for k, v in self._index.items() if k != name}
            unreadable = {k: v for k, v in self._unreadable.items() if k != name}
            if isinstance(found, Manifest):
                index[name] = found
            else:
                unreadable[name] = found
            self._index, self._unreadable = index, unreadable
            self._writes += 1

    # --- ModelStorage ---------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted({*self._ready_index(), *self._unreadable})

    def generation(self, not_before: float | None = None) -> FileStamp | None:
        # (known from this replica's own last write even before the index is first read: no
        # lookup is verified before then, since lookups need the index)
        return None if self._generation is None else (self._generation,)

    def version(self, name: str) -> Version | None:
        manifest = self._ready_index().get(name) or self._unreadable.get(name)
        return None if manifest is None else manifest.version

    def read(self, name: str) -> StoredModel | None:
        manifest = self._ready_index().get(name)
        if manifest is None:
            broken = self._unreadable.get(name)
            if broken is not None:
                raise CorruptModel(f"its manifest cannot be read: {broken.reason}")
            return None
        return StoredModel(manifest.config, manifest.version)

    def read_weights(
        self, name: str, config: FileStamp | None = None
    ) -> tuple[bytes, FileStamp] | None:
        manifest = self._ready_index().get(name)
        if manifest is None:
            if config is not None:
                raise ModelChanged(name)
            return None
        if config is not None and manifest.version[0] != config:
            raise ModelChanged(name)
        if manifest.weights is None:
            return None
        data = self.cache.get(manifest.weights)
        if data is None:
            key = f"weights/{manifest.weights}.safetensors"
            try:
                data, _ = self._get(key)
            except FileNotFoundError:
                raise StorageUnavailable(
                    f"the weights of model {name!r} are missing from {self.url} ({key} was "
                    "deleted behind the server): upload them again",
                    retry_after=30,
                ) from None
            if hashlib.sha256(data).hexdigest() != manifest.weights:
                raise StorageUnavailable(
                    f"the weights of model {name!r} in {self.url} do not match their digest",
                    retry_after=5,
                )
            self.cache.put(manifest.weights, data)
        return data, (manifest.weights,)

    def _write_weights(self, weights: bytes) -> str:
        digest = hashlib.sha256(weights).hexdigest()
        self._put(f"weights/{digest}.safetensors", weights)
        self.cache.put(digest, weights)
        return digest

    def _manifest_bytes(self, config: RNNConfig, digest: str, size: int) -> bytes:
        return orjson.dumps({
            "config": config.model_dump(mode="json"), "weights": digest, "size": size,
            "written": datetime.now(UTC).isoformat(timespec="seconds"),
        }, option=orjson.OPT_INDENT_2)  # fmt: skip

    def create(self, name: str, config: RNNConfig, weights: bytes) -> bool:
        """Write a new model: its weights, then its manifest only if none is there (one
        conditional write: of two replicas, one creates it). False if the name is taken."""
        if not MODEL_NAME.fullmatch(name):
            raise ValueError(f"invalid model name {name!r}")
        digest = self._write_weights(weights)
        try:
            etag = self._put(
                f"models/{name}/manifest.json",
                self._manifest_bytes(config, digest, len(weights)),
                mode="create",
            )
        except self._taken:
            # Another replica's, made meanwhile: in this index at once, so the caller that finds
            # the name taken also finds whose it is (the follower would see it only later).
            with contextlib.suppress(FileNotFoundError):
                self._learn(name, self._read_manifest(name))
            return False
        self._write_index(name, Manifest(config, digest, len(weights), etag))
        return True

    def replace_weights(self, name: str, weights: bytes) -> None:
        """Write the new weights, then switch the manifest to them, only if it is still the one
        read (FileNotFoundError if the model was deleted meanwhile)."""
        digest = self._write_weights(weights)
        for attempt in range(10):
            data, etag = self._get(f"models/{name}/manifest.json")  # FileNotFoundError: deleted
            config = RNNConfig.model_validate(orjson.loads(data)["config"])
            try:
                new_etag = self._put(
                    f"models/{name}/manifest.json",
                    self._manifest_bytes(config, digest, len(weights)),
                    mode={"e_tag": etag},
                )
            except self._changed:  # another write came between: read it again, a moment later
                time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
                continue
            self._write_index(name, Manifest(config, digest, len(weights), new_etag))
            return
        raise StorageUnavailable(f"model {name!r} kept changing under this upload", retry_after=1)

    def usage(self) -> tuple[int, int]:
        index = self._ready_index()
        return len(index), sum(m.size for m in index.values())

    def weights_size(self, name: str) -> int:
        manifest = self._ready_index().get(name)
        return 0 if manifest is None else manifest.size

    def clean_orphans(self, older_than_s: float) -> list[str]:
        """Remove weights objects no manifest names, once older than `older_than_s` (a younger
        one may belong to an upload in progress)."""
        self.refresh(force=True)
        # every digest any manifest names is in use, parsed or not
        used = {m.weights for m in self._index.values()}
        used |= {m.weights for m in self._unreadable.values()}
        blind = sorted(n for n, m in self._unreadable.items() if not m.known)
        if blind:
            log.warning(
                "model repository %s: no weights removed: the manifests of %s cannot be read, "
                "so the weights they name are unknown", self.url, ", ".join(blind),
            )  # fmt: skip
            return []
        cutoff = time.time() - older_than_s
        removed = []
        for meta in self._list("weights/"):
            key = str(meta["path"])
            digest = key.removeprefix("weights/").removesuffix(".safetensors")
            modified = meta.get("last_modified")
            if digest in used or modified is None or modified.timestamp() > cutoff:
                continue
            try:  # best effort: a key that may not delete (read-only) still serves
                self._call(f"DELETE {key}", self._obstore.delete, key)
            except (StorageUnavailable, FileNotFoundError) as exc:
                log.warning(
                    "model repository %s: an unused weights object stays (%s)",
                    self.url, getattr(exc, "detail", exc),
                )  # fmt: skip
                continue
            removed.append(key)
        return removed

    def _exists(self, key: str) -> bool:
        folder = key.rpartition("/")[0] + "/"  # (listing is by folder: a key's own is empty)
        return any(meta["path"] == key for meta in self._list(folder))

    def delete(self, name: str) -> bool:
        key = f"models/{name}/manifest.json"
        if not self._exists(key):
            return False
        self._call(f"DELETE {key}", self._obstore.delete, key)
        self._write_index(name, None)
        return True

    def close(self) -> None:
        self._stop.set()

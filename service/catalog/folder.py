"""The model repository on disk: `<root>/<name>/config.json` + `weights.safetensors`.

Every write is atomic: a new model is staged in a hidden folder and renamed into place whole; new
weights go to a temporary file in the model's folder, fsynced, then renamed over the old file. A
crash at any point leaves the old model or the new one, never a torn one. Replicas sharing the
folder see each other's changes through `version()`, a cheap stat of the two files.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
import uuid
from pathlib import Path

import orjson
from pydantic import ValidationError

from service.catalog.storage import CorruptModel, FileStamp, ModelChanged, StoredModel, Version
from service.core.schemas.api import MODEL_NAME
from service.core.schemas.config import RNNConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
GENERATION_FILE = ".generation"  # replaced after every change made through a Repository
_STAGING = ".staging"
_TRASH = ".trash"


def _stamp(st: os.stat_result) -> FileStamp:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _children(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class Repository:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._paths: dict[str, tuple[str, str]] = {}  # name -> (config path, weights path)
        self._generation = str(self.root / GENERATION_FILE)
        # the last stat of the generation file: (perf_counter just before it, its stamp)
        self._last_stat: tuple[float, FileStamp | None] = (-1.0, None)

    def folder(self, name: str) -> Path:
        if not MODEL_NAME.fullmatch(name):  # defence in depth: names are validated at the edge too
            raise ValueError(f"invalid model name {name!r}")
        return self.root / name

    def names(self) -> list[str]:
        return sorted(
            p.name
            for p in self.root.iterdir()
            if MODEL_NAME.fullmatch(p.name) and (p / CONFIG_FILE).is_file()
        )

    def generation(self, not_before: float | None = None) -> FileStamp | None:
        """A stamp that changes whenever any replica changes the repository through this class
        (one stat: readers skip the per-model stats while it is unchanged).

        A stat made after `not_before` (a perf_counter reading) is shared: every request that
        had arrived before that stat began takes its answer. That is exact, not a cache with a
        window: a change that a client saw finish (on any replica) finished before the client
        sent its next request, so before that request arrived, so before the shared stat. Under
        load, the requests read in one pass of the event loop share one stat."""
        taken, stamp = self._last_stat
        if not_before is not None and taken >= not_before:
            return stamp
        taken = time.perf_counter()  # before the stat: the stat sees everything done by then
        try:
            stamp = _stamp(os.stat(self._generation))
        except FileNotFoundError:
            stamp = None
        self._last_stat = (taken, stamp)
        return stamp

    def _bump(self) -> None:
        tmp = self.root / f"{GENERATION_FILE}.{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(uuid.uuid4().hex.encode())
        os.replace(tmp, self._generation)  # a new inode: every reader's stamp differs

    def version(self, name: str) -> Version | None:
        """The model's current version, or None if it is not (or no longer) in the repository.

        Called on every forward: two stat calls on cached path strings, nothing else.
        """
        paths = self._paths.get(name)
        if paths is None:
            folder = self.folder(name)
            paths = (str(folder / CONFIG_FILE), str(folder / WEIGHTS_FILE))
        try:
            config = _stamp(os.stat(paths[0]))
        except FileNotFoundError:
            self._paths.pop(name, None)
            return None
        self._paths[name] = paths  # only names that exist: the map cannot grow without bound
        try:
            weights: FileStamp | None = _stamp(os.stat(paths[1]))
        except FileNotFoundError:
            weights = None
        return (config, weights)

    def read(self, name: str) -> StoredModel | None:
        folder = self.folder(name)
        try:
            with (folder / CONFIG_FILE).open("rb") as f:
                stamp = _stamp(os.fstat(f.fileno()))
                raw = f.read()
        except FileNotFoundError:
            return None
        try:
            config = RNNConfig.model_validate(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            raise CorruptModel(f"{folder / CONFIG_FILE}: {exc}") from None
        version = self.version(name)
        weights = version[1] if version else None
        return StoredModel(config, (stamp, weights))

    def read_weights(
        self, name: str, config: FileStamp | None = None
    ) -> tuple[bytes, FileStamp] | None:
        """The weights file's bytes and the stamp of exactly the file that was read. `config`:
        the stamp of the config those weights must belong to — read from the same folder
        (one directory handle), so a model deleted and registered again with another config
        meanwhile is a ModelChanged, never its config with the other one's weights."""
        try:
            folder = os.open(self.folder(name), os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            if config is not None:
                raise ModelChanged(name) from None
            return None
        try:
            if config is not None:
                try:
                    now = _stamp(os.stat(CONFIG_FILE, dir_fd=folder))
                except FileNotFoundError:
                    now = None
                if now != config:
                    raise ModelChanged(name)
            try:
                fd = os.open(WEIGHTS_FILE, os.O_RDONLY, dir_fd=folder)
            except FileNotFoundError:
                return None
            with os.fdopen(fd, "rb") as f:
                return f.read(), _stamp(os.fstat(f.fileno()))
        finally:
            os.close(folder)

    def create(self, name: str, config: RNNConfig, weights: bytes) -> bool:
        """Write a new model whole; False if the name already exists (nothing is changed)."""
        target = self.folder(name)
        if target.exists():
            return False
        staging = self.root / _STAGING / f"{name}-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            config_json = orjson.dumps(config.model_dump(mode="json"), option=orjson.OPT_INDENT_2)
            _write_synced(staging / CONFIG_FILE, config_json)
            _write_synced(staging / WEIGHTS_FILE, weights)
            _fsync_dir(staging)
            try:
                os.rename(staging, target)  # fails if another replica created it meanwhile
            except OSError as exc:
                # it existed as we renamed (even if deleted again since): taken, not a failure
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) or target.exists():
                    return False
                raise
            _fsync_dir(self.root)
            self._bump()
            return True
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def replace_weights(self, name: str, weights: bytes) -> None:
        folder = self.folder(name)
        tmp = folder / f".{WEIGHTS_FILE}.{uuid.uuid4().hex}.tmp"
        try:
            _write_synced(tmp, weights)
            os.replace(tmp, folder / WEIGHTS_FILE)
            _fsync_dir(folder)
            self._bump()
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def usage(self) -> tuple[int, int]:
        """(models, bytes of their weights files) in the repository now."""
        models, nbytes = 0, 0
        for name in self.names():
            models += 1
            with contextlib.suppress(FileNotFoundError):
                nbytes += (self.root / name / WEIGHTS_FILE).stat().st_size
        return models, nbytes

    def weights_size(self, name: str) -> int:
        try:
            return (self.folder(name) / WEIGHTS_FILE).stat().st_size
        except FileNotFoundError:
            return 0

    def clean_orphans(self, older_than_s: float) -> list[str]:
        """Remove what an interrupted write left behind (staging folders, temporary files,
        folders being deleted) once it is older than `older_than_s`: younger ones may belong to
        a write in progress on another replica. Returns what was removed, relative to root."""
        cutoff = time.time() - older_than_s
        leftovers = [
            *(p for holder in (_STAGING, _TRASH) for p in _children(self.root / holder)),
            *(p for p in _children(self.root) if p.name.endswith(".tmp")),
            *(p for folder in _children(self.root) if folder.is_dir() and MODEL_NAME.fullmatch(
                folder.name) for p in _children(folder) if p.name.endswith(".tmp")),
        ]  # fmt: skip
        removed = []
        for path in leftovers:
            try:
                if path.lstat().st_mtime > cutoff:
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except OSError:
                continue  # gone meanwhile, or not ours to remove: leave it
            removed.append(str(path.relative_to(self.root)))
        return removed

    def close(self) -> None:
        """(Nothing follows a folder in the background.)"""

    def delete(self, name: str) -> bool:
        """Remove the model's folder; its name disappears at once (one rename)."""
        trash = self.root / _TRASH
        trash.mkdir(exist_ok=True)
        doomed = trash / f"{name}-{uuid.uuid4().hex}"
        try:
            os.rename(self.folder(name), doomed)
        except FileNotFoundError:
            return False
        _fsync_dir(self.root)
        self._bump()
        shutil.rmtree(doomed, ignore_errors=True)
        return True

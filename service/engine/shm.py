"""Shared memory for tensors crossing between a front-end process and the engine process.

Each front-end owns one `Arena`: a shared-memory segment from which it takes one block per
request, big enough for the request's input tensors and its answer's. It writes the inputs
there, the engine reads them in place and writes the answer into the same block, and the
front-end copies the answer out and gives the block back. Only offsets, dtypes and shapes cross
the socket; no tensor is ever pickled.
"""

from __future__ import annotations

import bisect
from multiprocessing import shared_memory
from typing import Any

import numpy as np

ALIGN = 64


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


class Arena:
    """A front-end's segment and a first-fit allocator over it (blocks are 64-byte aligned).

    Used from one event loop only: no locking.
    """

    def __init__(self, size: int) -> None:
        self.size = _aligned(max(size, ALIGN))
        self.shm = shared_memory.SharedMemory(create=True, size=self.size)
        self.name = self.shm.name
        self._free: list[tuple[int, int]] = [(0, self.size)]  # (offset, length), by offset

    def alloc(self, nbytes: int) -> int | None:
        """The offset of a free block of at least `nbytes`, or None if none is left."""
        need = _aligned(max(nbytes, 1))
        for i, (offset, length) in enumerate(self._free):
            if length >= need:
                if length == need:
                    del self._free[i]
                else:
                    self._free[i] = (offset + need, length - need)
                return offset
        return None

    def free(self, offset: int, nbytes: int) -> None:
        need = _aligned(max(nbytes, 1))
        i = bisect.bisect_left(self._free, (offset, 0))
        self._free.insert(i, (offset, need))
        # merge with the neighbours
        if i + 1 < len(self._free) and offset + need == self._free[i + 1][0]:
            self._free[i] = (offset, need + self._free[i + 1][1])
            del self._free[i + 1]
        if i > 0 and self._free[i - 1][0] + self._free[i - 1][1] == offset:
            self._free[i - 1] = (self._free[i - 1][0], self._free[i - 1][1] + self._free[i][1])
            del self._free[i]

    @property
    def free_bytes(self) -> int:
        return sum(length for _, length in self._free)

    def view(self, offset: int, dtype: np.dtype[Any], shape: tuple[int, ...]) -> Any:
        return np.ndarray(shape, dtype=dtype, buffer=self.shm.buf, offset=offset)

    def close(self) -> None:
        self.shm.close()
        self.shm.unlink()


class Attached:
    """The engine's view of a front-end's arena."""

    def __init__(self, name: str) -> None:
        # The front-ends are the engine process's children and share its resource tracker, which
        # already knows the segment: attaching registers nothing new, and the front-end that
        # owns the segment unlinks (and unregisters) it.
        self.shm = shared_memory.SharedMemory(name=name)

    def view(self, offset: int, dtype: np.dtype[Any], shape: tuple[int, ...]) -> Any:
        return np.ndarray(shape, dtype=dtype, buffer=self.shm.buf, offset=offset)

    def close(self) -> None:
        self.shm.close()

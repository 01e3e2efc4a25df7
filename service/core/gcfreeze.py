"""One habit of every serving process, engine and front-ends alike."""

from __future__ import annotations

import gc


def freeze_startup_objects(threshold: int) -> None:
    """torch, FastAPI and friends leave ~200k long-lived objects that every full collection
    would walk (100-150 ms measured, a p99 spike under load): move them out of the collector's
    reach once start-up is done. Every serving process does this (front-ends too). A
    `threshold` (RNN_SERVE_GC_THRESHOLD) other than 0 becomes the young generation's."""
    gc.collect()
    gc.freeze()
    if threshold:
        # Each young collection walks every container still alive, and under load that is the
        # requests in flight: a collection every `threshold` net allocations instead of
        # Python's 700 walks them far less often (docs/performance.md).
        gc.set_threshold(threshold, *gc.get_threshold()[1:])

"""Time slices: a long unidirectional forward runs as a series of shorter ones, the state carried
on the device from each slice to the next, so that other requests' forwards run in between.

A recurrence is a fold over time: running steps [0, t) and then [t, L) from the state at t is the
same computation as running [0, L) — the sliced answer equals the unsliced one (tested against
the float64 oracle). With `lengths` (packed sequences), a slice runs only the sequences still
going at its start, each for as many of its steps as fall in the slice; a sequence's h_n (and
c_n) is taken from the slice where it ends. A bidirectional forward cannot be sliced (its reverse
direction needs the whole sequence first): the data plane limits its cost instead.

Each slice is an ordinary job through the batcher: it waits its turn behind the jobs queued
before it, and may share a forward with them. Cancelling the caller stops the series (the next
slices never run).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import torch

from service.core.schemas.config import RNNConfig
from service.engine.job import ForwardJob, ForwardResult, State
from service.engine.tensor import CARRIER, WireTensor

Run = Callable[[ForwardJob], Awaitable[ForwardResult]]


def slice_steps(config: RNNConfig, job: ForwardJob, slice_macs: float) -> int:
    """Time steps a slice of this job may hold (at least one)."""
    per_step = config.step_macs() * max(job.batch, 1)
    return max(1, int(slice_macs // max(per_step, 1)))


async def run_sliced(config: RNNConfig, job: ForwardJob, steps: int, run: Run) -> ForwardResult:
    """`job` as slices of at most `steps` time steps; the same answer as running it whole."""
    carrier = CARRIER[config.dtype]
    n = job.batch
    # Sequence-major views, (L, N, F); an unbatched input is one sequence.
    x = job.input.array  # features (..., F) or token ids
    if not job.batched:
        x = x[:, None]
    elif config.batch_first:
        x = x.swapaxes(0, 1)
    lengths = np.asarray(job.lengths if job.lengths is not None else [job.seq_len] * n)
    output = np.zeros((job.seq_len, n, config.output_size), dtype=carrier)
    finals = [np.zeros((config.state_rows, n, size), dtype=carrier) for size in config.state_sizes]
    # The head's output: every step's, (L, N, K), or each sequence's last step's, (N, K).
    every = config.head is not None and config.head.on == "every_step"
    head = None
    if config.head is not None:
        k = config.head.out_features
        head = np.zeros((job.seq_len, n, k) if every else (n, k), dtype=carrier)
    # The whole batch's carried state, on the device (a session's, batched form), or None
    # before the first slice, which starts from the job's own initial state (host arrays).
    state: State | None = job.state
    if state is not None and not job.batched:
        state = tuple(part.unsqueeze(1) for part in state)
    batch_sequences = 0
    queued = computed = 0.0
    for start in range(0, job.seq_len, steps):
        stop = min(start + steps, job.seq_len)
        active = np.flatnonzero(lengths > start)  # the sequences still going
        if active.size == 0:
            break
        whole = active.size == n
        idx = None if whole else torch.from_numpy(active)
        part_lengths = np.minimum(lengths[active] - start, stop - start)
        piece_x = x[start:stop] if whole else x[start:stop, active]
        if config.batch_first:
            piece_x = piece_x.swapaxes(0, 1)
        piece = ForwardJob(
            WireTensor(np.ascontiguousarray(piece_x), job.input.dtype, True),
            _columns0(job.state0, job.batched, active, whole) if state is None else None,
            tuple(int(v) for v in part_lengths) if (part_lengths < stop - start).any() else None,
            True, stop - start, int(active.size),
            state=None if state is None else _columns(state, idx),
            keep_state=True,
        )  # fmt: skip
        result = await run(piece)
        batch_sequences = max(batch_sequences, result.batch_sequences)
        queued, computed = queued + result.queue_s, computed + result.compute_s
        block = result.output.transpose(1, 0, 2) if config.batch_first else result.output
        if whole:
            output[start:stop] = block
        else:
            output[start:stop, active] = block
        ends = lengths[active] <= stop  # the sequences whose last step falls in this slice
        for final, got in zip(finals, (result.h_n, result.c_n), strict=False):
            assert got is not None
            final[:, active[ends]] = got[:, ends]
        if head is not None:
            assert result.head is not None
            if not every:  # a sequence's last step is in the slice where it ends
                head[active[ends]] = result.head[ends]
            else:
                block = result.head.swapaxes(0, 1) if config.batch_first else result.head
                if whole:
                    head[start:stop] = block
                else:
                    head[start:stop, active] = block
        assert result.state is not None
        state = _merge(state, result.state, idx)
    answer = _answer(config, job, output, finals, state, batch_sequences)
    if head is not None:
        if not job.batched:
            head = head[:, 0] if every else head[0]
        elif every and config.batch_first:
            head = head.swapaxes(0, 1)
        answer.head = np.ascontiguousarray(head)
    answer.queue_s, answer.compute_s = queued, computed
    return answer


def _columns0(
    parts: tuple[WireTensor, ...] | None, batched: bool, active: np.ndarray[Any, Any], whole: bool
) -> tuple[WireTensor, ...] | None:
    """The initial state of the active sequences (host arrays, batched form)."""
    if parts is None:
        return None
    out = []
    for part in parts:
        arr = part.array if batched else part.array[:, None, :]
        columns = arr if whole else arr[:, active]
        out.append(WireTensor(np.ascontiguousarray(columns), part.dtype, True))
    return tuple(out)


# With ragged lengths, a slice runs a subset of the sequences: their states are gathered from, and
# scattered back into, the whole batch's state here. These are copies of a few rows of state (not
# forwards), made under inference mode, as the state tensors were.


def _columns(state: State, idx: torch.Tensor | None) -> State:
    if idx is None:
        return state
    with torch.inference_mode():
        return tuple(part.index_select(1, idx.to(part.device)) for part in state)


def _merge(state: State | None, new: State, idx: torch.Tensor | None) -> State:
    """The whole batch's state after a slice that ran the `idx` columns (all when None). Only
    the first slice can find no state yet, and it always runs every sequence."""
    if idx is None:
        return new
    assert state is not None
    with torch.inference_mode():
        for whole_part, part in zip(state, new, strict=True):
            whole_part.index_copy_(1, idx.to(part.device), part)
    return state


def _answer(
    config: RNNConfig,
    job: ForwardJob,
    output: np.ndarray[Any, Any],
    finals: list[np.ndarray[Any, Any]],
    state: State | None,
    batch_sequences: int,
) -> ForwardResult:
    if not job.batched:
        out = output[:, 0]
        finals = [f[:, 0] for f in finals]
        kept = None if state is None else tuple(p[:, 0] for p in state)
    else:
        out = output.transpose(1, 0, 2) if config.batch_first else output
        kept = state
    return ForwardResult(
        np.ascontiguousarray(out),
        np.ascontiguousarray(finals[0]),
        np.ascontiguousarray(finals[1]) if len(finals) == 2 else None,
        kept if job.keep_state else None,
        batch_sequences,
    )

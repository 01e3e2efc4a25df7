"""The torch side: runs validated jobs on a module. Called only from the engine's worker thread.

The three modes differ only in their state: nn.RNN and nn.GRU take and return h, nn.LSTM the
pair (h, c). Here a state is always a tuple of its parts, so batching, packing and sessions join
and split every part the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from service.core.schemas.config import RNNConfig
from service.engine.build import TORCH_DTYPES, Stack, core_of
from service.engine.job import ForwardJob, ForwardResult, State
from service.engine.tensor import CARRIER, WireTensor


def to_torch(t: WireTensor, device: torch.device) -> torch.Tensor:
    return array_to_torch(t.array, t.dtype == "bfloat16", device)


def array_to_torch(arr: np.ndarray[Any, Any], bf16: bool, device: torch.device) -> torch.Tensor:
    """Host array -> device tensor in one copy; bfloat16 arrives as uint16 bit patterns."""
    if not arr.flags.writeable:
        arr = arr.copy()
    tensor = torch.from_numpy(arr)
    if bf16:
        tensor = tensor.view(torch.int16).view(torch.bfloat16)
    return tensor.to(device, non_blocking=True)


def to_numpy(t: torch.Tensor) -> np.ndarray[Any, Any]:
    t = t.detach().to("cpu").contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def _call(module: nn.Module, x: Any, state: State | None) -> tuple[Any, State]:
    """module(x, hx) with the state as a tuple either way."""
    hx: Any = None
    if state is not None:
        hx = state if len(state) == 2 else state[0]
    out, final = module(x, hx)
    return out, (tuple(final) if isinstance(final, tuple) else (final,))


def _result(
    out: np.ndarray[Any, Any], finals: Sequence[np.ndarray[Any, Any]], state: State | None,
    batch: int, head: np.ndarray[Any, Any] | None = None,
) -> ForwardResult:  # fmt: skip
    c_n = finals[1] if len(finals) == 2 else None
    return ForwardResult(out, finals[0], c_n, state, batch, head=head)


def _embed(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Token ids -> the core's input, through the model's embedding (features pass as they are)."""
    if isinstance(module, Stack) and module.embedding is not None:
        return module.embedding(x)  # type: ignore[no-any-return]
    return x


def _softmax(y: torch.Tensor) -> torch.Tensor:
    return torch.softmax(y, dim=-1)


def _log_softmax(y: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(y, dim=-1)


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "softmax": _softmax,
    "log_softmax": _log_softmax,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}


def _head(
    module: nn.Module, config: RNNConfig, out: torch.Tensor, last: torch.Tensor | None,
    batch_dim: int,
) -> torch.Tensor | None:  # fmt: skip
    """The head on the core's output `out` (its batch on `batch_dim`; None: unbatched): every
    step's, or, with `last` (each sequence's last valid step), those steps' only."""
    if config.head is None or not isinstance(module, Stack) or module.head is None:
        return None
    if config.head.on == "last_step":
        assert last is not None
        if batch_dim == -1:  # unbatched (L, F)
            out = out[last]
        else:
            rows = torch.arange(out.shape[batch_dim], device=out.device)
            out = out[rows, last] if batch_dim == 0 else out[last, rows]
    y = module.head(out)
    activation = config.head.activation
    y = y if activation == "none" else _ACTIVATIONS[activation](y)
    if last is not None and config.head.on == "every_step" and batch_dim != -1:
        # Past a sequence's length there is no step: its head output is 0, as its output is.
        steps = torch.arange(y.shape[1 - batch_dim], device=y.device)
        valid = steps[None, :] <= last[:, None]  # (N, L)
        y = y * (valid if batch_dim == 0 else valid.T)[..., None].to(y.dtype)
    return y


def _last_steps(lengths: Sequence[int] | None, seq_len: int, batch: int) -> torch.Tensor:
    """Each sequence's last valid step (its length's, else the input's)."""
    if lengths is None:
        return torch.full((batch,), seq_len - 1, dtype=torch.int64)
    return torch.tensor(lengths, dtype=torch.int64) - 1


def _head_numpy(y: torch.Tensor | None) -> np.ndarray[Any, Any] | None:
    return None if y is None else to_numpy(y)


def run_forward(module: nn.Module, config: RNNConfig, job: ForwardJob) -> ForwardResult:
    device = next(module.parameters()).device
    dtype = TORCH_DTYPES[config.dtype]
    core = core_of(module)
    x = to_torch(job.input, device)
    state = job.state
    if state is None and job.state0 is not None:
        state = tuple(to_torch(p, device).contiguous() for p in job.state0)
    with torch.inference_mode():
        x = _embed(module, x)
        if job.lengths is None:
            out, final = _call(core, x, state)
        elif job.batch == 0:
            out = torch.zeros(*_output_shape(config, job), dtype=dtype, device=device)
            final = tuple(
                torch.zeros(config.state_rows, 0, size, dtype=dtype, device=device)
                for size in config.state_sizes
            )
        else:
            lengths = torch.tensor(job.lengths, dtype=torch.int64)  # must live on the CPU
            packed = pack_padded_sequence(
                x, lengths, batch_first=config.batch_first, enforce_sorted=False
            )
            packed_out, final = _call(core, packed, state)
            out, _ = pad_packed_sequence(
                packed_out, batch_first=config.batch_first, total_length=job.seq_len
            )
        if config.head is None:
            head = None
        elif job.batched:
            last = _last_steps(job.lengths, job.seq_len, job.batch).to(out.device)
            head = _head(module, config, out, last, 0 if config.batch_first else 1)
        else:
            head = _head(module, config, out, torch.tensor(job.seq_len - 1), -1)
    kept = tuple(p.clone() for p in final) if job.keep_state else None
    return _result(to_numpy(out), [to_numpy(p) for p in final], kept, job.batch, _head_numpy(head))


def _output_shape(config: RNNConfig, job: ForwardJob) -> tuple[int, ...]:
    if config.batch_first:
        return (job.batch, job.seq_len, config.output_size)
    return (job.seq_len, job.batch, config.output_size)


def run_batch(
    module: nn.Module, config: RNNConfig, jobs: Sequence[ForwardJob]
) -> list[ForwardResult]:
    """Run several validated jobs of one model as one forward; each gets what it would alone.

    Requests are joined on the batch axis of a sequence-major buffer (every state part on dim 1,
    whatever batch_first says; an unbatched request is one sequence). Requests of different
    lengths, or with `lengths`, run as packed sequences, so no sequence ever runs over another's
    padding.
    """
    if len(jobs) == 1:
        return [run_forward(module, config, jobs[0])]
    device = next(module.parameters()).device
    bf16 = config.dtype == "bfloat16"
    carrier = jobs[0].input.array.dtype  # the input's: token ids are int64
    state_carrier = CARRIER[config.dtype]  # the state's: the model's, whatever the input is
    seq_len = max(j.seq_len for j in jobs)
    total = sum(j.batch for j in jobs)
    rows = config.state_rows

    if config.ids:  # token ids, (L, N), for the embedding
        x = np.zeros((seq_len, total), dtype=jobs[0].input.array.dtype)
    else:
        x = np.zeros((seq_len, total, config.input_size), dtype=carrier)
    with_state = any(j.state0 is not None or j.state is not None for j in jobs)
    state0 = (
        [np.zeros((rows, total, size), dtype=state_carrier) for size in config.state_sizes]
        if with_state
        else None
    )
    lengths: list[int] = []
    start = 0
    for j in jobs:
        stop = start + j.batch
        x[: j.seq_len, start:stop] = _seq_major(j.input.array, j.batched, config.batch_first)
        if state0 is not None and j.state0 is not None:
            for buf, part in zip(state0, j.state0, strict=True):
                buf[:, start:stop] = part.array if j.batched else part.array[:, None]
        lengths += list(j.lengths) if j.lengths else [j.seq_len] * j.batch
        start = stop

    xt = array_to_torch(x, bf16 and not config.ids, device)
    core = core_of(module)
    state: State | None = None
    if state0 is not None:
        state = tuple(array_to_torch(buf, bf16, device) for buf in state0)
        start = 0  # sessions' states are already on the device: placed there directly
        for j in jobs:
            if j.state is not None:
                for buf_t, part_t in zip(state, j.state, strict=True):
                    buf_t[:, start : start + j.batch] = part_t if j.batched else part_t[:, None]
            start += j.batch
    with torch.inference_mode():
        xt = _embed(module, xt)
        if all(n == seq_len for n in lengths):
            # batch_first modules take (N, L, F); a transposed view of the buffer costs nothing.
            out, final = _call(core, xt.transpose(0, 1) if config.batch_first else xt, state)
            if config.batch_first:
                out = out.transpose(0, 1)
        else:
            packed = pack_padded_sequence(
                xt, torch.tensor(lengths, dtype=torch.int64), enforce_sorted=False
            )
            packed_out, final = _call(core, packed, state)
            out, _ = pad_packed_sequence(packed_out, total_length=seq_len)
        last = None if config.head is None else _last_steps(lengths, seq_len, total).to(out.device)
        head_all = _head_numpy(_head(module, config, out, last, 1))  # sequence-major
    out_np, finals_np = to_numpy(out), [to_numpy(p) for p in final]
    every_step = config.head is not None and config.head.on == "every_step"

    results = []
    start = 0
    for j in jobs:
        stop = start + j.batch
        o = out_np[: j.seq_len, start:stop]
        finals = [f[:, start:stop] for f in finals_np]
        kept = tuple(p[:, start:stop].clone() for p in final) if j.keep_state else None
        head = None
        if head_all is not None:
            head = head_all[: j.seq_len, start:stop] if every_step else head_all[start:stop]
        if not j.batched:
            o, finals = o[:, 0], [f[:, 0] for f in finals]
            kept = None if kept is None else tuple(p[:, 0] for p in kept)
            if head is not None:
                head = head[:, 0] if every_step else head[0]
        elif config.batch_first:
            o = o.transpose(1, 0, 2)
            if head is not None and every_step:
                head = head.transpose(1, 0, 2)
        finals = [np.ascontiguousarray(f) for f in finals]
        results.append(_result(np.ascontiguousarray(o), finals, kept, total, _contiguous(head)))
        start = stop
    return results


def _contiguous(arr: np.ndarray[Any, Any] | None) -> np.ndarray[Any, Any] | None:
    return None if arr is None else np.ascontiguousarray(arr)


def _seq_major(arr: np.ndarray[Any, Any], batched: bool, batch_first: bool) -> np.ndarray[Any, Any]:
    """(L, N, ...) of a job's input: features (..., F) or token ids."""
    if not batched:
        return arr[:, None]
    return arr.swapaxes(0, 1) if batch_first else arr

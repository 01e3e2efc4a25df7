"""A forward's values on its way through the engine: the decoded inputs, the validated job and
its result. Plain NumPy-backed values: front-end processes use them without importing torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from service.engine.tensor import WireTensor

if TYPE_CHECKING:
    import torch

State = tuple["torch.Tensor", ...]  # a state on the serving device: (h,) or, for LSTM, (h, c)


@dataclass(slots=True)  # values: never changed once made (not frozen: that costs per request)
class Inputs:
    """A decoded forward request, whatever protocol it came by."""

    input: WireTensor
    h0: WireTensor | None = None
    c0: WireTensor | None = None  # LSTM only
    lengths: Sequence[int] | None = None


@dataclass(slots=True)
class ForwardJob:
    """A validated forward: tensors in the model's dtype, shapes consistent with the config."""

    input: WireTensor
    state0: tuple[WireTensor, ...] | None  # (h0,) or, for LSTM, (h0, c0); None = zeros
    lengths: tuple[int, ...] | None
    batched: bool
    seq_len: int
    batch: int  # 1 for unbatched input
    # Streaming sessions: the state held by the server, on the serving device, used in place of
    # state0; and whether to hand the new state back (ForwardResult.state).
    state: State | None = None
    keep_state: bool = False

    def steps(self) -> int:
        """Time steps this job runs (its share of the work)."""
        return sum(self.lengths) if self.lengths else self.seq_len * self.batch


@dataclass(slots=True)  # a value: never changed once made (not frozen: that costs per request)
class ForwardResult:
    """Arrays in the model's dtype (bfloat16 as uint16 bit patterns), on the host."""

    output: np.ndarray[Any, Any]
    h_n: np.ndarray[Any, Any]
    c_n: np.ndarray[Any, Any] | None = None  # LSTM only
    state: State | None = None  # the final state on the device, for jobs with keep_state
    batch_sequences: int = 0  # sequences in the forward this job ran in (for logs)
    queue_s: float = 0.0  # how long it waited in the batcher (traces)
    compute_s: float = 0.0  # how long the forward it ran in took on the device (traces)
    # The head's output (a model with a head): every step's, laid out as `output`, or each
    # sequence's last valid step's, (N, out_features) or (out_features,) unbatched.
    head: np.ndarray[Any, Any] | None = None

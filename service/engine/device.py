"""Choosing the serving device and setting torch's process-wide numerics once, at start-up."""

from __future__ import annotations

import warnings

import torch

from service.core.cpus import usable_cpus
from service.core.settings import Settings


def resolve_device(spec: str) -> torch.device:
    """`auto` picks CUDA when available; a forced `cuda` without a GPU fails fast."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"RNN_SERVE_DEVICE={spec} but torch sees no CUDA device")
    return device


def torch_threads(settings: Settings) -> int:
    """Intra-op threads for the engine: the setting, or every CPU but the event loop's."""
    return settings.torch_threads or max(1, usable_cpus() - 1)


def configure_torch(settings: Settings) -> None:
    # An LSTM with proj_size runs on torch's own CPU kernel, not oneDNN's; torch says so once per
    # process as a UserWarning. It changes nothing in the answer (tested against the oracle).
    warnings.filterwarnings(
        "ignore", message="LSTM with projections is not supported with oneDNN", category=UserWarning
    )
    # With as many intra-op threads as cores, each forward takes every core from the event loop
    # that decodes the next requests and answers the last ones.
    torch.set_num_threads(torch_threads(settings))
    # float32 RNNs on cuDNN default to TF32 (~1e-3 error). rnn-serve's promise is torch's exact
    # float32, so IEEE is the default; TF32 is an opt-in for throughput.
    precision = settings.cuda_fp32_precision
    torch.backends.cudnn.rnn.fp32_precision = precision  # type: ignore[attr-defined]
    torch.backends.cuda.matmul.fp32_precision = precision

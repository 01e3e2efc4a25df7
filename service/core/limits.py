"""Every bound a request meets on its way in, and its refusal: one home for their values and
their messages.

Each limit is a setting, and each refusal names that setting and where the request met it. A
limit is checked where what it bounds is first known, by the function here:
- a body's bytes, declared or read (the edge), decompressed too (`service.http.encoding`):
  `body_too_large`;
- a tensor's elements, as its codec decodes it: `tensor_too_large`;
- a forward's answer and cost, once it is validated and before anything is queued: `Admission`
  (the data plane's one admission step);
- the queue's length, as the job is queued (the batcher): `queue_full`.

A model's size and the repository's quotas are the catalog's (`service.catalog.catalog`), a
session's state budget the session store's; docs/settings.md lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.core.errors import Loc, Overloaded, PayloadTooLarge
from service.core.schemas.config import RNNConfig
from service.core.settings import Settings


@dataclass(frozen=True, slots=True)
class Limit:
    value: int
    setting: str  # the environment variable that sets it


class BodyLimits:
    """The bytes a request body may have: weights uploads have their own, larger limit."""

    def __init__(self, max_body_bytes: int, max_weights_bytes: int) -> None:
        self.body = Limit(max_body_bytes, "RNN_SERVE_MAX_BODY_BYTES")
        self.weights = Limit(max_weights_bytes, "RNN_SERVE_MAX_WEIGHTS_BYTES")

    def of(self, method: str, path: str) -> Limit:
        return self.weights if method == "PUT" and path.endswith("/weights") else self.body


def body_too_large(
    limit: Limit, declared: int | None = None, decoded: bool = False
) -> PayloadTooLarge:
    if declared is not None:
        return PayloadTooLarge(
            f"the body has {declared} bytes; the limit is {limit.value} ({limit.setting})"
        )
    verb = "decompresses to" if decoded else "is"
    return PayloadTooLarge(
        f"the body {verb} over the limit of {limit.value} bytes ({limit.setting})"
    )


def tensor_too_large(loc: Loc, count: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"{'.'.join(map(str, loc))} has {count} elements; the limit is {limit}")


def queue_full(max_queue: int) -> Overloaded:
    return Overloaded(f"the queue is full ({max_queue} requests, RNN_SERVE_MAX_QUEUE); retry later")


class Admission:
    """The data plane's admission step: a validated forward whose answer or cost is over a
    budget is refused (413) before anything runs."""

    def __init__(self, settings: Settings) -> None:
        self.max_elements = settings.max_tensor_elements
        self.max_macs = settings.max_request_macs
        self.max_unsliced_macs = settings.max_unsliced_macs

    def admit(self, config: RNNConfig, seq_len: int, batch: int, steps: int) -> None:
        # the head's output counts too: every step's, or one row a sequence
        head = config.head_size * (seq_len if config.head and config.head.on == "every_step" else 1)
        elements = seq_len * batch * config.output_size + batch * head
        if elements > self.max_elements:
            raise PayloadTooLarge(
                f"the answer would have {elements} output elements; the limit is "
                f"{self.max_elements} (RNN_SERVE_MAX_TENSOR_ELEMENTS): send fewer or shorter "
                "sequences"
            )
        macs = steps * config.step_macs()
        if macs > self.max_macs:
            raise PayloadTooLarge(
                f"this forward would cost {macs:.3g} multiply-accumulates; the limit is "
                f"{self.max_macs:.3g} (RNN_SERVE_MAX_REQUEST_MACS): send fewer or shorter "
                "sequences"
            )
        if not config.sliceable and macs > self.max_unsliced_macs:
            raise PayloadTooLarge(
                f"this bidirectional forward would cost {macs:.3g} multiply-accumulates and "
                "cannot run in time slices (the reverse direction needs the whole sequence); "
                f"the limit is {self.max_unsliced_macs:.3g} (RNN_SERVE_MAX_UNSLICED_MACS)"
            )

"""make bench's report reads a round's CPU a request only where the round answered enough."""

from __future__ import annotations

from bench.harness import Result
from bench.report import MIN_ANSWERS_PER_CLIENT, reliable
from bench.run import SECONDS


def _round(rps: float, c: int) -> Result:
    return Result("s", "bare", c, rps, 1.0, 1.0, 1.0, 0, cpu_ms=1.0)


def test_a_round_with_few_answers_a_connection_is_not_read() -> None:
    enough = MIN_ANSWERS_PER_CLIENT * 64 / SECONDS
    assert reliable(_round(enough, 64))
    assert not reliable(_round(enough * 0.9, 64))
    assert reliable(_round(enough / 64, 1))  # a 64th of the rate is as much for one connection
    # the 2 MiB body on the bare no-op at c=64: 13.4 answers a second, ~1 a connection a round
    assert not reliable(_round(13.4, 64))

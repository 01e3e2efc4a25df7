"""make bench's report reads a round's CPU a request only where the round answered enough."""

from __future__ import annotations

from bench.harness import MIN_ANSWERS_PER_CLIENT, SECONDS, Result, reliable
from bench.run import MAX_SECONDS, rerun_seconds


def _round(rps: float, c: int) -> Result:
    return Result("s", "bare", c, rps, 1.0, 1.0, 1.0, 0, cpu_ms=1.0)


def test_a_round_with_few_answers_a_connection_is_not_read() -> None:
    enough = MIN_ANSWERS_PER_CLIENT * 64 / SECONDS
    assert reliable(_round(enough, 64))
    assert not reliable(_round(enough * 0.9, 64))
    assert reliable(_round(enough / 64, 1))  # a 64th of the rate is as much for one connection
    # the 2 MiB body on the bare no-op at c=64: 13.4 answers a second, ~1 a connection a round
    assert not reliable(_round(13.4, 64))


def test_a_round_with_too_few_answers_runs_again_long_enough() -> None:
    """The 2 MiB body at c=64 on rnn-serve: ~50 answers a second, 3 a connection in 4 s. Its
    rerun is long enough to be read, at its rate; never shorter than twice the round, nor
    longer than BENCH_MAX_SECONDS."""
    short = _round(50, 64)
    seconds = rerun_seconds(short)
    assert reliable(Result("s", "bare", 64, 50, 1.0, 1.0, 1.0, 0, seconds=seconds))
    assert seconds == int(seconds)  # wrk takes whole seconds
    assert rerun_seconds(_round(MIN_ANSWERS_PER_CLIENT * 64 / SECONDS * 0.99, 64)) == 2 * SECONDS
    assert rerun_seconds(_round(0.0, 64)) == MAX_SECONDS  # nothing answered: the longest
    long = Result("s", "bare", 64, 50, 1.0, 1.0, 1.0, 0, seconds=20.0)
    assert reliable(long)  # the round's own length, not BENCH_SECONDS, is what it is read by

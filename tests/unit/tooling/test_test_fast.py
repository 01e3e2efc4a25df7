"""`make test-fast` starts no server process: a test is marked by what its fixtures and
parameters start, and a server started under it anyway fails the test that started it."""

from __future__ import annotations

import pytest

from tests.support import NO_SERVERS, may_start
from tests.support.markers import starts


@pytest.mark.parametrize(
    ("fixtures", "params", "marks"),
    [
        ({"client"}, {}, set()),
        ({"redis_server"}, {}, {"redis"}),
        ({"live_server"}, {}, {"e2e"}),
        ({"live_server_s3"}, {}, {"e2e", "s3"}),
        # the repository fixture's bucket case, alone or beside other parameters
        ({"repository"}, {"repository": "s3"}, {"s3"}),
        ({"repository"}, {"repository": "s3", "bad": "x"}, {"s3"}),
        ({"repository"}, {"repository": "folder", "bad": "x"}, set()),
    ],
)
def test_a_test_is_marked_by_what_it_starts(
    fixtures: set[str], params: dict[str, object], marks: set[str]
) -> None:
    assert starts(fixtures, params) == marks


def test_a_server_started_under_test_fast_fails_the_test(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NO_SERVERS, raising=False)
    may_start("redis-server")  # make test: allowed
    monkeypatch.setenv(NO_SERVERS, "1")
    with pytest.raises(AssertionError, match="starts redis-server, and make test-fast"):
        may_start("redis-server")

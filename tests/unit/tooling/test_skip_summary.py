"""`make test` on a machine without nginx, redis-server or chromium skips their tests, and its
summary names what was missing and how to install it."""

from __future__ import annotations

import pytest


def test_the_summary_names_the_missing_servers(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("from tests.conftest import pytest_terminal_summary  # noqa: F401\n")
    pytester.makepyfile(
        """
        import pytest

        def test_a():
            pytest.skip("redis-server is not installed (.ci/run installs it)")

        def test_b():
            pytest.skip("redis-server is not installed (.ci/run installs it)")

        @pytest.mark.skipif(True, reason="chromium is not installed (.ci/run installs it)")
        def test_c():
            pass

        def test_d():
            pass
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=3)
    result.stdout.fnmatch_lines(
        ["*skipped for want of: chromium (1 tests), redis-server (2 tests)*apt-get install*"]
    )

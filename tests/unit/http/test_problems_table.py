"""The HTTP error table: every domain error's status and problem type (the list is shared with
the gRPC table's test)."""

from __future__ import annotations

import orjson
import pytest

from service.core.errors import ServiceError
from service.http.problems import PROBLEMS, oip_error_answer, problem_answer, status_of
from tests.support.errors import ERRORS, every_error_class


def test_the_list_names_every_domain_error() -> None:
    assert {type(exc) for exc, *_ in ERRORS} == every_error_class()
    assert set(PROBLEMS) == every_error_class()


@pytest.mark.parametrize(("exc", "status", "slug"), [(x, s, g) for x, s, g, _ in ERRORS])
def test_each_error_has_its_status(exc: ServiceError, status: int, slug: str) -> None:
    assert status_of(exc) == (status, slug)
    body = orjson.loads(problem_answer(exc).body)
    assert body["status"] == status
    assert body["type"] == f"urn:rnn-serve:problem:{slug}"
    oip = oip_error_answer(exc)
    assert oip.status == (400 if status in (400, 415, 422) else status)
    assert orjson.loads(oip.body)["error"]

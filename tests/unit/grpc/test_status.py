"""The gRPC error table: every domain error's status, from the list the HTTP table's test reads."""

from __future__ import annotations

import grpc
import pytest

from service.core.errors import InvalidInput, ServiceError, described
from service.grpc.status import STATUSES, status_of
from tests.support.errors import ERRORS, every_error_class


def test_every_domain_error_has_a_grpc_status() -> None:
    assert set(STATUSES) == every_error_class()


@pytest.mark.parametrize(("exc", "code"), [(x, c) for x, _, _, c in ERRORS])
def test_each_error_has_its_grpc_status(exc: ServiceError, code: grpc.StatusCode) -> None:
    assert status_of(exc) == code


def test_an_unknown_error_is_internal() -> None:
    class Strange(ServiceError):
        pass

    assert status_of(Strange("?")) == grpc.StatusCode.INTERNAL


def test_the_message_names_the_field() -> None:
    exc = InvalidInput.at(("inputs", 0, "raw_input_contents"), "needs 80 bytes, got 79")
    assert described(exc) == "inputs.0.raw_input_contents: needs 80 bytes, got 79"
    assert described(InvalidInput.at(("body", "h0"), "bad")) == "h0: bad"

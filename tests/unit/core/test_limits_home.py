"""service.core.limits: every refusal names its setting, and where the request met it."""

from __future__ import annotations

import pytest

from service.core.errors import Overloaded, PayloadTooLarge
from service.core.limits import Admission, BodyLimits, body_too_large, queue_full, tensor_too_large
from service.core.schemas.config import RNNConfig
from tests.conftest import make_settings


def test_weights_uploads_have_their_own_body_limit() -> None:
    limits = BodyLimits(max_body_bytes=10, max_weights_bytes=1000)
    assert limits.of("PUT", "/v1/models/m/weights").setting == "RNN_SERVE_MAX_WEIGHTS_BYTES"
    assert limits.of("GET", "/v1/models/m/weights").value == 10
    assert limits.of("POST", "/v1/rnn/forward").setting == "RNN_SERVE_MAX_BODY_BYTES"


def test_refusals_name_the_limit_and_where() -> None:
    limit = BodyLimits(10, 1000).body
    assert "has 11 bytes; the limit is 10 (RNN_SERVE_MAX_BODY_BYTES)" in str(
        body_too_large(limit, 11)
    )
    assert "decompresses to over the limit of 10" in str(body_too_large(limit, decoded=True))
    assert str(tensor_too_large(("body", "input"), 7, 5)).startswith("body.input has 7 elements")
    assert isinstance(queue_full(3), Overloaded)
    assert "RNN_SERVE_MAX_QUEUE" in str(queue_full(3))


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"max_tensor_elements": 100}, "RNN_SERVE_MAX_TENSOR_ELEMENTS"),
        ({"max_request_macs": 10.0}, "RNN_SERVE_MAX_REQUEST_MACS"),
    ],
)
def test_admission_names_the_budget_it_refuses(overrides: dict[str, float], setting: str) -> None:
    admission = Admission(make_settings(**overrides))
    config = RNNConfig(input_size=4, hidden_size=8)
    with pytest.raises(PayloadTooLarge, match=setting):
        admission.admit(config, seq_len=50, batch=4, steps=200)

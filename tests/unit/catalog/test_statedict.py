"""A trained module's state_dict names -> the stored names, read from the names themselves or
from `prefixes` where they cannot say."""

from __future__ import annotations

import pytest

from service.catalog.statedict import parse_prefixes, stored_names
from service.core.errors import InvalidInput
from service.core.schemas.config import RNNConfig

CORE = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
LAYERED = RNNConfig(
    mode="LSTM", input_size=2, hidden_size=3,
    embedding={"num_embeddings": 5}, head={"out_features": 2},
)  # fmt: skip
PLAIN = RNNConfig(mode="LSTM", input_size=2, hidden_size=3)


def names(prefix: str, leaves: list[str]) -> list[str]:
    return [f"{prefix}.{leaf}" if prefix else leaf for leaf in leaves]


@pytest.mark.parametrize(
    ("emb", "core", "head"),
    [("embedding", "lstm", "fc"), ("emb", "encoder.gru", "classifier"), ("embed", "rnn", "out")],
)
def test_the_layers_are_read_from_the_names(emb: str, core: str, head: str) -> None:
    given = [f"{emb}.weight", *names(core, CORE), f"{head}.weight", f"{head}.bias"]
    mapping = stored_names(given, LAYERED)
    assert sorted(mapping.values()) == sorted(
        ["embedding.weight", *names("rnn", CORE), "head.weight", "head.bias"]
    )


def test_a_core_alone_may_come_under_a_prefix_or_none() -> None:
    assert stored_names(names("lstm", CORE), PLAIN) == dict(
        zip(names("lstm", CORE), CORE, strict=True)
    )
    assert stored_names(CORE, PLAIN) == {n: n for n in CORE}


def test_names_that_fit_nothing_stay_for_the_check_to_report() -> None:
    mapping = stored_names([*names("lstm", CORE), "dropout.p"], PLAIN)
    assert mapping["dropout.p"] == "dropout.p"


def test_ambiguous_names_ask_for_prefixes() -> None:
    with pytest.raises(InvalidInput, match="several prefixes hold a recurrent core"):
        stored_names([*names("a", CORE), *names("b", CORE)], PLAIN)
    given = ["tok.weight", *names("x", CORE), "one.weight", "two.weight"]
    mapping = stored_names(given, LAYERED, {"embedding": "tok", "head": "two"})
    assert mapping["tok.weight"] == "embedding.weight"
    assert mapping["two.weight"] == "head.weight"
    assert mapping["one.weight"] == "one.weight"  # reported as unexpected by the check


@pytest.mark.parametrize(
    ("text", "expected"),
    [("embedding=tok,core=lstm.,head=fc", {"embedding": "tok", "core": "lstm", "head": "fc"}),
     ("core=", {"core": ""})],
)  # fmt: skip
def test_prefixes_parse(text: str, expected: dict[str, str]) -> None:
    assert parse_prefixes(text) == expected


@pytest.mark.parametrize("text", ["lstm", "body=x", "core=a,core=b"])
def test_bad_prefixes_are_422(text: str) -> None:
    with pytest.raises(InvalidInput, match="layer=prefix pairs"):
        parse_prefixes(text)


def test_a_prefix_for_a_layer_the_model_lacks_is_refused() -> None:
    with pytest.raises(InvalidInput, match="the model has no head"):
        stored_names(names("lstm", CORE), PLAIN, {"head": "fc"})

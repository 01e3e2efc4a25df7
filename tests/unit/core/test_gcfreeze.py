"""The serving processes' collector: start-up objects frozen, the young threshold from settings."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from service.core.gcfreeze import freeze_startup_objects
from tests.conftest import make_settings


@pytest.fixture
def restored() -> Iterator[None]:
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def test_the_threshold_is_set_and_the_older_generations_kept(restored: None) -> None:
    gc.set_threshold(700, 10, 10)
    freeze_startup_objects(make_settings(gc_threshold=12_345).gc_threshold)
    assert gc.get_threshold() == (12_345, 10, 10)
    assert gc.get_freeze_count() > 0


def test_zero_keeps_pythons(restored: None) -> None:
    gc.set_threshold(700, 10, 10)
    freeze_startup_objects(make_settings(gc_threshold=0).gc_threshold)
    assert gc.get_threshold() == (700, 10, 10)


def test_the_default_is_the_measured_one() -> None:
    assert make_settings().gc_threshold == 20_000

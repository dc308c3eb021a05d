"""Fixtures of the delivery tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gaesignals import tracing

from .support import Metrics


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    """A meter provider in use by the library for one test, then none again."""
    recorded = Metrics()
    tracing.use(meter_provider=recorded.provider)
    try:
        yield recorded
    finally:
        tracing.use()
        recorded.provider.shutdown()

"""The queue layer's contract suite runs on every store, Valkey's standalone and cluster too."""

from __future__ import annotations

import pytest

from ..conftest import STORES, VALKEY_STORES


@pytest.fixture(params=STORES + VALKEY_STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Every store kind: the top conftest's ``raw`` and ``store`` build each."""
    kind: str = request.param
    return kind

"""The queue layer's contract suite (one module per module of :mod:`gaesignals.queue`) runs on
every store, Valkey's standalone and cluster too.

Not named ``tests/queue``: the scripts in ``tests/`` run with it first on ``sys.path``, where a
package of that name would stand in for the standard library's ``queue``."""

from __future__ import annotations

import pytest

from ..conftest import STORES, VALKEY_STORES


@pytest.fixture(params=STORES + VALKEY_STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Every store kind: the top conftest's ``raw`` and ``store`` build each."""
    kind: str = request.param
    return kind

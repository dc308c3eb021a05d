"""The pytest plugin's ``make_store``: the one way tests build a store on the plugin's servers."""

from __future__ import annotations

import pytest

from gaesignals.pytest_plugin import make_store
from gaesignals.stores import Store


def _value(store: Store, key: str) -> bytes | None:
    with store.connection() as conn:
        item = conn.gets_many([key]).get(key)
    return None if item is None else item[0]


@pytest.mark.parametrize("kind", ["memcached", "redis"])
def test_a_store_opened_without_flushing_sees_what_the_test_stored(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """``flush=False`` opens a second view of the served cache; the default empties it first."""
    first, first_closable = make_store(kind, request)
    try:
        with first.connection() as conn:
            assert conn.add_many({"kept": b"value"}) == {"kept": True}
        second, second_closable = make_store(kind, request, flush=False)
        assert _value(second, "kept") == b"value"
        second_closable.close()
        third, third_closable = make_store(kind, request)
        assert _value(third, "kept") is None
        third_closable.close()
    finally:
        first_closable.close()


@pytest.mark.parametrize("kind", ["memcached", "redis"])
def test_url_options_reach_a_served_store(kind: str, request: pytest.FixtureRequest) -> None:
    """Keyword options become the served store's URL options, as ``max_value_size`` shows."""
    store, closable = make_store(kind, request, max_value_size=5000, timeout=0.5)
    try:
        assert store.max_value_size == 5000
    finally:
        closable.close()


@pytest.mark.parametrize("kind", ["memory", "memory-cas", "appengine"])
def test_a_store_without_a_server_refuses_url_options(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """Only a served store has a URL to take options, so the others say so."""
    with pytest.raises(ValueError, match="takes no URL options"):
        make_store(kind, request, max_value_size=5000)

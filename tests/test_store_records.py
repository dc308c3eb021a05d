"""What a store's reads return: :class:`~gaesignals.stores.Cached` records, and on a memcached
cluster the copies stranded away from a key's home under names made by
:func:`~gaesignals.stores.stranded_key`."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pymemcache.client.base import Client

from gaesignals.stores import (
    Cached,
    Store,
    home_key,
    is_stranded,
    stranded_at,
    stranded_key,
)
from gaesignals.stores.memcached import MemcachedStore
from gaesignals.testing.servers import MemcachedServer

from .conftest import STORES, VALKEY_STORES


@pytest.fixture(params=STORES + VALKEY_STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Every store kind, and Valkey's: the conftest's ``raw`` and ``store`` build each."""
    kind: str = request.param
    return kind


def test_reads_return_cached_records(store: Store) -> None:
    """gets_many and scan_many give each key found as a Cached record, value and token named."""
    with store.connection() as conn:
        conn.add_many({"rec": b"one"})
        for read in (conn.gets_many, conn.scan_many):
            found = read(["rec", "missing"])
            assert list(found) == ["rec"]
            assert isinstance(found["rec"], Cached)
            assert found["rec"].value == b"one"


def test_a_record_read_is_what_cas_takes_back(store: Store) -> None:
    """A Cached record with its value replaced is a CAS write that wins once per token."""
    with store.connection() as conn:
        conn.add_many({"rec": b"one"})
        read = conn.gets_many(["rec"])["rec"]
        assert conn.cas_many({"rec": read._replace(value=b"two")}) == {"rec": True}
        assert conn.cas_many({"rec": read._replace(value=b"three")}) == {"rec": False}
        assert conn.gets_many(["rec"])["rec"].value == b"two"


def test_a_stranded_name_says_its_key_and_its_server() -> None:
    """stranded_key's name gives back the key and the server; a key at home is its own key."""
    name = stranded_key("gs::q:alpha", "127.0.0.1:11211")
    assert (home_key(name), stranded_at(name), is_stranded(name)) == (
        "gs::q:alpha",
        "127.0.0.1:11211",
        True,
    )
    assert (home_key("gs::q:alpha"), stranded_at("gs::q:alpha")) == ("gs::q:alpha", "")
    assert not is_stranded("gs::q:alpha")


def test_a_cluster_scan_names_a_stranded_copy_by_its_server(
    own_memcached: Callable[..., MemcachedServer],
) -> None:
    """On a memcached cluster, scan_many finds a copy on a server other than the key's home
    under stranded_key's name, and a CAS through that name writes that copy, not the home's."""
    from pymemcache.client.hash import HashClient

    servers = [own_memcached() for _ in range(2)]
    store = MemcachedStore(HashClient([s.address for s in servers], default_noreply=False))
    try:
        key = "gs::q:stray"
        home = store.client_for(key).server
        other = next(s for s in servers if s.address != home)
        raw = Client(other.address, default_noreply=False)
        raw.set(key, b"away")
        where = f"{other.address[0]}:{other.address[1]}"
        with store.connection() as conn:
            conn.add_many({key: b"home"})
            found = conn.scan_many([key])
            name = stranded_key(key, where)
            assert {k: v.value for k, v in found.items()} == {key: b"home", name: b"away"}
            assert conn.cas_many({name: found[name]._replace(value=b"")}) == {name: True}
            assert conn.gets_many([key])[key].value == b"home"
        assert raw.get(key) == b""
        raw.close()
    finally:
        store.close()

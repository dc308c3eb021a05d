"""The Store protocol's contract, which every adapter must keep (and the Redis store on Valkey,
standalone and clustered, too)."""

from __future__ import annotations

import pytest

from gaesignals.stores import Store
from gaesignals.stores.memcached import MemcachedStore

from .conftest import STORES, VALKEY_STORES


@pytest.fixture(params=STORES + VALKEY_STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Every store kind, and Valkey's: the conftest's ``raw`` and ``store`` build each."""
    kind: str = request.param
    return kind


def test_gets_many_returns_only_existing_keys(store: Store) -> None:
    """Missing keys are absent from the result, present ones come with a token."""
    with store.connection() as conn:
        assert conn.add_many({"k1": b"one"}) == {"k1": True}
        found = conn.gets_many(["k1", "missing"])
    assert set(found) == {"k1"}
    assert found["k1"][0] == b"one"


def test_add_refuses_an_existing_key(store: Store) -> None:
    """add creates a key only once: the basis of locks and first sends."""
    with store.connection() as conn:
        assert conn.add_many({"a": b"1", "b": b"2"}) == {"a": True, "b": True}
        assert conn.add_many({"a": b"x", "c": b"3"}) == {"a": False, "c": True}
        assert conn.gets_many(["a"])["a"][0] == b"1"


def test_cas_wins_once_per_token(store: Store) -> None:
    """A token allows one write; after it, the old token loses."""
    with store.connection() as conn:
        conn.add_many({"c": b"v1"})
        token = conn.gets_many(["c"])["c"][1]
        assert conn.cas_many({"c": (b"v2", token)}) == {"c": True}
        assert conn.cas_many({"c": (b"v3", token)}) == {"c": False}
        assert conn.gets_many(["c"])["c"][0] == b"v2"


def test_cas_on_a_missing_key_fails(store: Store) -> None:
    """A key that vanished (evicted, deleted) cannot be CAS-written back into existence."""
    with store.connection() as conn:
        conn.add_many({"gone": b"v"})
        token = conn.gets_many(["gone"])["gone"][1]
        conn.delete_many(["gone"])
        assert conn.cas_many({"gone": (b"w", token)}) == {"gone": False}
        assert conn.gets_many(["gone"]) == {}


def test_cas_many_is_per_key(store: Store) -> None:
    """In one batch, keys with fresh tokens are written and stale ones are not."""
    with store.connection() as conn:
        conn.add_many({f"k{i}": b"0" for i in range(10)})
        tokens = conn.gets_many([f"k{i}" for i in range(10)])
        stale = conn.gets_many(["k3"])["k3"][1]
        conn.cas_many({"k3": (b"changed", stale)})
        result = conn.cas_many({k: (b"1", t) for k, (_, t) in tokens.items()})
    assert result.pop("k3") is False
    assert all(result.values()) and len(result) == 9


def test_append_changes_value_and_token(store: Store) -> None:
    """Where the store appends atomically, append extends the value, either creates a missing
    key or refuses it without storing anything, and invalidates tokens read before it;
    elsewhere append is refused outright."""
    if not store.supports_append:
        with store.connection() as conn, pytest.raises(NotImplementedError):
            conn.append_many({"ap": b"x"})
        return
    with store.connection() as conn:
        created = conn.append_many({"nope": b"x"})["nope"]
        assert conn.gets_many(["nope"]).get("nope", (None,))[0] == (b"x" if created else None)
        conn.add_many({"ap": b"a"})
        token = conn.gets_many(["ap"])["ap"][1]
        assert conn.append_many({"ap": b"b"}) == {"ap": True}
        assert conn.gets_many(["ap"])["ap"][0] == b"ab"
        assert conn.cas_many({"ap": (b"", token)}) == {"ap": False}


def test_values_over_the_limit_are_refused(store: Store) -> None:
    """No add stores a value larger than max_value_size. A cas past the item limit is refused,
    except, for a queue key, on memcached, which keeps it in segments (an acknowledgement may
    rewrite a queue that concurrent first sends took past max_value_size; it must never fail
    for its size)."""
    big = b"x" * (store.max_value_size + 1)
    queue = "gs::q:{big}"  # only queue keys are kept in segments
    with store.connection() as conn:
        assert conn.add_many({"big": big, queue: big}) == {"big": False, queue: False}
        conn.add_many({"big": b"small", queue: b"small"})
        tokens = conn.gets_many(["big", queue])
        huge = b"x" * (store.max_value_size * 3 // 2)  # past memcached's 1 MiB item limit
        assert conn.cas_many({"big": (huge, tokens["big"][1])}) == {"big": False}
        assert conn.gets_many(["big"])["big"][0] == b"small"
        if isinstance(store, MemcachedStore):
            assert conn.cas_many({queue: (huge, tokens[queue][1])}) == {queue: True}
            assert conn.gets_many([queue])[queue][0] == huge
        else:
            assert conn.cas_many({queue: (huge, tokens[queue][1])}) == {queue: False}
            assert conn.gets_many([queue])[queue][0] == b"small"


def test_empty_values_are_values(store: Store) -> None:
    """An empty value is a present key (a drained queue, a released lock), not a missing one."""
    with store.connection() as conn:
        assert conn.add_many({"e": b""}) == {"e": True}
        assert conn.gets_many(["e"])["e"][0] == b""
        assert conn.add_many({"e": b"x"}) == {"e": False}


def test_binary_values_round_trip(store: Store) -> None:
    """Every byte value survives, including CR LF and NUL (the text protocol's hazards)."""
    value = bytes(range(256)) * 4 + b"\r\nEND\r\n"
    with store.connection() as conn:
        conn.add_many({"bin": value})
        assert conn.gets_many(["bin"])["bin"][0] == value


def test_delete_many_ignores_missing_keys(store: Store) -> None:
    """Deleting absent keys is not an error."""
    with store.connection() as conn:
        conn.add_many({"d1": b"1"})
        conn.delete_many(["d1", "d2"])
        assert conn.gets_many(["d1", "d2"]) == {}


def _counter(conn: object, key: str) -> int | None:
    item = conn.gets_many([key]).get(key)  # type: ignore[attr-defined]
    return None if item is None else int(item[0])


def test_incr_many_creates_adds_and_floors_at_zero(store: Store) -> None:
    """incr_many creates a missing counter at max(delta, 0), adds to an existing one, stops a
    negative delta at 0, reads back as ASCII digits (maybe space-padded), and leaves a key
    that is not a counter as it is."""
    with store.connection() as conn:
        conn.add_many({"text": b"not a number"})
        conn.incr_many({"n1": 5, "n2": -3, "text": 1})
        assert (_counter(conn, "n1"), _counter(conn, "n2")) == (5, 0)
        conn.incr_many({"n1": 10, "n2": 2})
        conn.incr_many({"n1": -12})
        assert (_counter(conn, "n1"), _counter(conn, "n2")) == (3, 2)
        conn.incr_many({"n1": -100})
        assert _counter(conn, "n1") == 0
        assert conn.gets_many(["text"])["text"][0] == b"not a number"
        conn.incr_many({})


def test_append_many_bumps_counters_in_the_same_call(store: Store) -> None:
    """append_many's counters are applied whatever the appends' outcome (the caller takes
    back what it must); an append that would pass max_value_size stores nothing of it."""
    if not store.supports_append:
        return
    with store.connection() as conn:
        conn.add_many({"q": b"a"})
        result = conn.append_many({"q": b"b", "gone": b"x"}, {"c": 2})
        assert result["q"] is True
        assert conn.gets_many(["gone"]).get("gone", (None,))[0] == (
            b"x" if result["gone"] else None
        )
        assert _counter(conn, "c") == 2
        rest = b"x" * (store.max_value_size - 2)
        assert conn.append_many({"q": rest}, {"c": 1}) == {"q": True}
        assert conn.append_many({"q": b"y"}, {"c": 1}) == {"q": False}
        assert _counter(conn, "c") == 4
        assert len(conn.gets_many(["q"])["q"][0]) == store.max_value_size


def test_cas_many_bumps_counters_whatever_the_outcome(store: Store) -> None:
    """cas_many's counters are applied with the writes (ahead of them), whether each compare
    wins or loses: weak delivery counts its resets this way, in their own round trip."""
    with store.connection() as conn:
        conn.add_many({"won": b"old", "lost": b"old"})
        tokens = conn.gets_many(["won", "lost"])
        conn.set_many({"lost": b"changed"})
        result = conn.cas_many(
            {"won": (b"", tokens["won"][1]), "lost": (b"", tokens["lost"][1])},
            counters={"accounted": 3, "gone": -1},
        )
        assert result == {"won": True, "lost": False}
        assert (_counter(conn, "accounted"), _counter(conn, "gone")) == (3, 0)
        values = {key: item[0] for key, item in conn.gets_many(["won", "lost"]).items()}
        assert values == {"won": b"", "lost": b"changed"}
        conn.cas_many({}, counters={"accounted": 2})
        assert _counter(conn, "accounted") == 5

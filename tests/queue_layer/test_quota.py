"""Quotas (:mod:`gaesignals.queue.quota`), on every store: uses counted up to the limit per
period, the count shared by every caller, and a key holding garbage never raising."""

from __future__ import annotations

import secrets

import pytest

from gaesignals import StoreUnavailable
from gaesignals.queue import quota
from gaesignals.stores import Store
from gaesignals.testing import DownStore
from tests.conftest import RawAccess


def new_key(period: int = 1) -> str:
    return quota.quota_key(secrets.token_hex(8), period, "")


def test_uses_are_allowed_up_to_the_limit(store: Store) -> None:
    """The first ``limit`` uses are allowed, the next refused; the count reads back."""
    key = new_key()
    assert [quota.spend(store, key, 3, 60) for _ in range(5)] == [True] * 3 + [False] * 2
    with store.connection() as conn:
        assert conn.gets_many([key])[key].value.rstrip() == b"3"


def test_each_period_and_each_name_has_its_own_count(store: Store) -> None:
    """Another period's key, or another name's, starts from zero."""
    name = secrets.token_hex(8)
    first, second = quota.quota_key(name, 1, ""), quota.quota_key(name, 2, "")
    assert quota.spend(store, first, 1, 60) and not quota.spend(store, first, 1, 60)
    assert quota.spend(store, second, 1, 60)
    assert quota.spend(store, new_key(), 1, 60)


def test_a_limit_of_zero_allows_nothing(store: Store) -> None:
    """With ``limit=0`` even a first use is refused."""
    assert not quota.spend(store, new_key(), 0, 60)


def test_garbage_in_a_quota_key_allows_and_is_left_alone(raw: RawAccess) -> None:
    """A key holding something other than a count neither raises nor blocks: the use is
    allowed and the bytes stay as they were."""
    key = new_key()
    raw.set(key, b"\xffnot a count")
    assert quota.spend(raw.store, key, 1, 60) and quota.spend(raw.store, key, 1, 60)
    assert raw.get(key) == b"\xffnot a count"


def test_spending_on_a_store_that_is_down_raises() -> None:
    """An unreachable store raises StoreUnavailable (the bridge answers a bare failure)."""
    with pytest.raises(StoreUnavailable):
        quota.spend(DownStore(), new_key(), 1, 60)

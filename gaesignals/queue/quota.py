"""Quotas: how many times something may happen per period, counted in the cache so every
process of an app shares the count (the browser bridge limits each session's calls so).

A quota's count for one period is a counter key that expires with the period. Spending reads
it and bumps it: two round trips, and concurrent spenders may pass the limit by as many as
they are, a bound loose enough for a rate limit. A count the cache lost starts again at zero;
a key holding something other than a count is left alone and spends nothing from it.
"""

from __future__ import annotations

import hashlib

from ..stores import Store, counter_value


def quota_key(name: str, period: int, namespace: str) -> str:
    """The counter of quota ``name`` (a digest of it is used) in the period numbered
    ``period``."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"gs:{namespace}:rq:{{{digest}}}:{period}"


def spend(store: Store, key: str, limit: int, seconds: int) -> bool:
    """Count one use at ``key`` (a counter living ``seconds``) unless it holds ``limit``
    already; whether the use was allowed."""
    with store.connection() as conn:
        found = conn.gets_many([key]).get(key)
        if found is None:
            if conn.add_many({key: b"1"}, seconds).get(key):
                return limit >= 1
            found = conn.gets_many([key]).get(key)
            if found is None:
                return limit >= 1  # created and lost at once: count it as a first use
        count = counter_value(found.value)
        if count is None:
            return True
        if count >= limit:
            return False
        conn.incr_many({key: 1})
        return True

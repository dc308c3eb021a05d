"""Helpers of the coalescing, cancellation and purge tests: frames built with their metadata,
a weak take over any number of shards, and what it gave."""

from __future__ import annotations

import pickle
from collections.abc import Sequence

from gaesignals import frames
from gaesignals.accounting import flush
from gaesignals.config import get_settings
from gaesignals.keys import SignalKeys, shard_queues, signal_keys
from gaesignals.queue import weak_take
from gaesignals.queue.weak_take import Found, Parse, WeakTaken
from gaesignals.stores import Store

from ..conftest import RawAccess
from .support import Layout

#: The take's clock in the tests (Unix ms), and the send time of their payloads before it.
NOW = 1_800_000_000_000
COUNTED = ("accounted", "delivered", "dropped", "expired", "coalesced", "cancelled", "purged")


class Reader:
    """Reads every value by its full parse, signed as the settings say; no ttl."""

    def read(self, name: str, key: str, value: bytes) -> list[bytes] | Parse:
        settings = get_settings()
        parsed = frames.parse_queue(value, keys(name).queue.encode(), settings.secret_keys)
        held = [item.frame for item in parsed.held]
        return parsed.found, parsed.bad, parsed.marker_width, held, parsed.cancels

    def within_ttl(self, name: str, found: Found) -> Found:
        return found

    def parse(self, name: str, key: str, value: bytes) -> Parse:
        got = self.read(name, key, value)
        assert not isinstance(got, list)  # this reader never gives bare bodies
        return got


def keys(name: str) -> SignalKeys:
    return signal_keys(name, get_settings().namespace)


def shard(name: str, index: int) -> str:
    """The queue key of shard ``index`` of ``name``."""
    return shard_queues(keys(name).queue, index + 1)[index]


def frame(
    name: str,
    body: object,
    *,
    key: str | None = None,
    sent: int = NOW - 10_000,
    debounce: int = 0,
    debounce_max: int = 0,
    due: int = 0,
    attempts: int = 0,
    n: int = 0,
) -> bytes:
    """A payload frame of ``name``: coalesced under ``key`` (sent at ``sent`` ms, with its
    debounce) when given, due at ``due`` when given; ``n`` makes its id unique."""
    meta = frames.meta_entry(frames.META_NOT_BEFORE, due.to_bytes(8, "big")) if due else b""
    if key is not None:
        meta += frames.coalesce_meta(
            key, sent_ms=sent, debounce_ms=debounce, debounce_max_ms=debounce_max
        )
    ident = bytes((7, 7, 7, 7)) + n.to_bytes(4, "big")
    secret = get_settings().secret_keys
    signal = keys(name).queue.encode()
    raw = pickle.dumps(body)
    return frames.encode(raw, signal, secret, meta=meta, ident=ident, attempts=attempts)


def cancel(name: str, payload: bytes, secret_keys: Sequence[bytes] | None = None) -> bytes:
    """The cancellation of ``payload`` (a frame of ``name``), signed as the settings say."""
    signing = get_settings().secret_keys if secret_keys is None else secret_keys
    return frames.cancel_frame(frames.ident_of(payload), keys(name).queue.encode(), signing)


def take(store: Store, names: Sequence[str], *, now: int = NOW, shards: int = 1) -> WeakTaken:
    """A take of ``names`` over ``shards`` keys each, with its counts written."""
    settings = get_settings()
    layout = Layout(settings, names, shards)
    with store.connection() as conn:
        taken = weak_take.take(conn, settings, layout, Reader(), now=now)
        flush(conn, taken.counts)
    return taken


def bodies(taken: WeakTaken) -> dict[str, list[object]]:
    """What the take hands to the handlers, by signal, in the take's order."""
    out: dict[str, list[object]] = {}
    for key in taken.taken:
        if not key.within_ttl:
            continue
        out.setdefault(key.name, []).extend(
            pickle.loads(item if isinstance(item, bytes) else item.body) for item in key.within_ttl
        )
    return out


def counters(raw: RawAccess, name: str) -> dict[str, int]:
    """The non-zero counters of ``name``."""
    values = {what: raw.get(keys(name).counter(what)) for what in COUNTED}
    counts = {what: int(value.rstrip(b" ")) for what, value in values.items() if value}
    return {what: n for what, n in counts.items() if n}

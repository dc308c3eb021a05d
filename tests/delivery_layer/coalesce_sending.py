"""Sends with a coalesce key, a debounce, a delay or a retry, as the library frames them, for
the delivery tests of coalescing and cancellation (the public ``send(coalesce=)`` builds the
same frames)."""

from __future__ import annotations

from typing import Any

from gaesignals import frames
from gaesignals.codec import encode_payload
from gaesignals.config import get_settings
from gaesignals.keys import signal_keys
from gaesignals.queue.append import append_one
from gaesignals.queue.cancel import placed_of
from gaesignals.timing import now_ms


def send_coalesced(
    name: str,
    data: Any,
    key: str | None = "",
    *,
    debounce_ms: int = 0,
    debounce_max_ms: int = 0,
    due: int = 0,
) -> str:
    """Send ``data`` to ``name`` coalesced under ``key`` (None: not coalesced), counted
    ``sent``; returns its payload id."""
    settings = get_settings()
    keys = signal_keys(name, settings.namespace)
    meta = frames.meta_entry(frames.META_NOT_BEFORE, due.to_bytes(8, "big")) if due else b""
    if key is not None:
        meta += frames.coalesce_meta(
            key, sent_ms=now_ms(), debounce_ms=debounce_ms, debounce_max_ms=debounce_max_ms
        )
    frame = encode_payload(name, data, keys, settings, meta)
    append_one(settings, keys.queue, frame, (), keys.counter("sent"))
    return placed_of(frame, keys.queue, ()).id

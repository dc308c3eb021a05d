"""Mailboxes: what Python posts to browsers, kept in the cache until their next poll reads it.

A mailbox is one key (per window, session, user, and one broadcast ring) holding a log of
lines. The first line may be a header ``#<base>``: how many messages were trimmed from the
head. Every other line is one message, ``<ident> <mac> <json>``: 16 hex digits naming it, the
MAC of the rest bound to the mailbox's key (``-`` without a secret key), and its JSON body. A
message's sequence number is ``base`` plus its place in the log, so numbers only grow, and a
reader keeps a :class:`Mark`: how many it has accounted for and the ident of the last one.

Posting appends one line per mailbox in one call (one round trip per server) where the store
appends; otherwise, for a mailbox not there yet, a log past its bounds, and now and then (see
:class:`_Tally`), it is read and rewritten by compare-and-set, trimmed to
:data:`KEEP_MESSAGES` lines and :data:`KEEP_BYTES`, with a fresh expiry. Reading is one
batched read of a client's mailboxes. A reader whose messages were lost (trimmed unseen, the
mailbox evicted or replaced) is told to reset. Lines that do not parse, or whose MAC fails
while a secret key is set, take their place in the numbering and are skipped: a cache writer
without the key cannot put a message before a browser.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from ..exceptions import Contention
from ..stores import Cached, Connection, Store, counter_value

#: Lines a rewrite keeps (the newest), and bytes, the newest line always kept.
KEEP_MESSAGES = 64
KEEP_BYTES = 64 * 1024
#: Each process rewrites (trims, and sets the expiry of) a mailbox on its first post to it,
#: then every this many posts: between two rewrites a log grows by appends only.
CHECK_EVERY = 16
#: How long a mailbox nobody rewrites lives: a reader who had seen messages in it resets.
MAILBOX_SECONDS = 24 * 3600
#: Rewrites tried before a post gives up (others' posts changing the same mailbox meanwhile).
ATTEMPTS = 8
#: Mailbox kinds: a window, a session, a user, the broadcast ring.
KINDS = ("w", "s", "u", "b")

_IDENT = re.compile(rb"[0-9a-f]{16}\Z")
_MAC_CONTEXT = b"gaesignals mailbox\0"


class Mark(NamedTuple):
    """Where a reader is in one mailbox: the sequence number of the next message it wants,
    and the ident of the one before it ("" when it has seen none)."""

    next: int
    last: str


class Caught(NamedTuple):
    """What one read of a mailbox gave a reader: the new messages (ident, JSON body), its
    mark after them, and whether messages it had not seen were lost."""

    messages: list[tuple[str, bytes]]
    mark: Mark
    reset: bool


def mailbox_key(kind: str, name: str, namespace: str) -> str:
    """The key of the mailbox of ``kind`` (:data:`KINDS`) named ``name``: a digest, so that
    no id a host hands over ends up in a key as it is."""
    if kind not in KINDS:
        raise ValueError(f"a mailbox kind is one of {KINDS}, got {kind!r}")
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"gs:{namespace}:m{kind}:{{{digest}}}"


def message_line(key: str, ident: str, body: bytes, secret_keys: Sequence[bytes]) -> bytes:
    """One message as its mailbox ``key`` holds it (``body``: JSON without a newline)."""
    if not _IDENT.match(ident.encode("ascii", "replace")) or b"\n" in body:
        raise ValueError("a message needs a 16 hex digit ident and a body on one line")
    mac = _mac(secret_keys[0], key, ident, body) if secret_keys else b"-"
    return b"%s %s %s\n" % (ident.encode("ascii"), mac, body)


def _mac(secret: bytes, key: str, ident: str, body: bytes) -> bytes:
    message = b"%s%s\0%s\0%s" % (_MAC_CONTEXT, key.encode(), ident.encode("ascii"), body)
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:32].encode("ascii")


class _Tally:
    """This process's posts per mailbox, which say when a post rewrites instead of appending:
    its first, every :data:`CHECK_EVERY`-th, and one coming half an expiry after this
    process's last rewrite (so a mailbox posted to at least that often never expires).
    Forgotten wholesale past a bound: a forgotten mailbox is rewritten at its next post."""

    LIMIT = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        #: Each mailbox's posts since its last rewrite here, and when that was.
        self._posts: dict[str, tuple[int, float]] = {}

    def due(self, keys: Sequence[str]) -> set[str]:
        """The ``keys`` whose post now is a rewrite, counting this post."""
        now = self._clock()
        with self._lock:
            if len(self._posts) > self.LIMIT:
                self._posts.clear()
            found = set()
            for key in keys:
                posts, rewritten = self._posts.get(key, (0, now))
                if posts % CHECK_EVERY == 0 or now - rewritten >= MAILBOX_SECONDS / 2:
                    found.add(key)
                    posts, rewritten = 0, now
                self._posts[key] = (posts + 1, rewritten)
            return found


_tally = _Tally()


def post(store: Store, lines: Mapping[str, bytes]) -> None:
    """Add each line (:func:`message_line`) to the end of its mailbox.

    Raises :class:`~gaesignals.Contention` when others kept changing a mailbox through every
    attempt (``keys`` names those left without the line), and
    :class:`~gaesignals.StoreUnavailable` when the cache cannot be reached.
    """
    due = _tally.due(list(lines)) if store.supports_append else set(lines)
    with store.connection() as conn:
        appends = {key: line for key, line in lines.items() if key not in due}
        refused = conn.append_many(appends) if appends else {}
        again = {key: lines[key] for key in lines if key in due or not refused.get(key, True)}
        if again:
            _rewrite(conn, again)


def _rewrite(conn: Connection, lines: Mapping[str, bytes]) -> None:
    """Read each mailbox and write it back trimmed, with its line at the end, by
    compare-and-set (a missing one is added), until every line is in."""
    waiting = dict(lines)
    for _ in range(ATTEMPTS):
        found = conn.gets_many(list(waiting))
        fresh = {key: line for key, line in waiting.items() if key not in found}
        swaps = {
            key: Cached(trimmed(found[key].value, line), found[key].token)
            for key, line in waiting.items()
            if key in found
        }
        written = conn.add_many(fresh, MAILBOX_SECONDS) if fresh else {}
        if swaps:
            written |= conn.cas_many(swaps, MAILBOX_SECONDS)
        waiting = {key: line for key, line in waiting.items() if not written.get(key)}
        if not waiting:
            return
    raise Contention(
        f"{len(waiting)} mailbox(es) changed under each of {ATTEMPTS} attempts", waiting
    )


def trimmed(value: bytes, line: bytes) -> bytes:
    """The mailbox ``value`` with ``line`` appended, keeping its newest lines within
    :data:`KEEP_MESSAGES` and :data:`KEEP_BYTES`; the header counts those dropped."""
    base, lines = parse(value)
    lines.append(line.rstrip(b"\n"))
    kept, size = 0, 0
    for old in reversed(lines):
        size += len(old) + 1
        if kept and (kept >= KEEP_MESSAGES or size > KEEP_BYTES):
            break
        kept += 1
    base += len(lines) - kept
    header = b"#%d\n" % base if base else b""
    return header + b"".join(old + b"\n" for old in lines[-kept:])


def parse(value: bytes) -> tuple[int, list[bytes]]:
    """A mailbox's base (messages trimmed from its head) and lines, whatever bytes it holds."""
    lines = value.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    base = 0
    if lines and lines[0].startswith(b"#"):
        base = counter_value(lines.pop(0)[1:]) or 0
    return base, lines


def read(store: Store, keys: Sequence[str]) -> dict[str, bytes]:
    """The mailboxes at ``keys`` that exist, in one batched read."""
    with store.connection() as conn:
        return {key: cached.value for key, cached in conn.gets_many(list(keys)).items()}


def ident_of(line: bytes) -> str:
    """The ident a reader remembers a line by: its own, or a digest of a line that has none."""
    head = line[:16]
    if _IDENT.match(head) and line[16:17] == b" ":
        return head.decode("ascii")
    return "g" + hashlib.sha256(line).hexdigest()[:15]


def _verified(key: str, line: bytes, secret_keys: Sequence[bytes]) -> bytes | None:
    """The body of a well-formed line, checked against every key when there are keys."""
    parts = line.split(b" ", 2)
    if len(parts) != 3 or not _IDENT.match(parts[0]):
        return None
    ident, mac, body = parts[0].decode("ascii"), parts[1], parts[2]
    if secret_keys and not any(
        hmac.compare_digest(mac, _mac(secret, key, ident, body)) for secret in secret_keys
    ):
        return None
    return body


def catch_up(
    key: str, value: bytes | None, mark: Mark | None, secret_keys: Sequence[bytes]
) -> Caught:
    """The messages of mailbox ``key`` (read as ``value``; None: missing) past ``mark``.

    ``mark=None`` (a reader new to the mailbox) starts at its end. A reader is told to reset
    (and moved to the end) when messages it had not seen are gone: trimmed, or the mailbox
    evicted, expired or replaced by another (its last message is not where it was)."""
    if value is None:
        return Caught([], Mark(0, ""), mark is not None and mark.next > 0)
    base, lines = parse(value)
    end = Mark(base + len(lines), ident_of(lines[-1]) if lines else "")
    if mark is None:
        return Caught([], end, False)
    start = _resume(base, lines, mark)
    if start is None:
        return Caught([], end, True)
    messages = []
    for line in lines[start - base :]:
        body = _verified(key, line, secret_keys)
        if body is not None:
            messages.append((ident_of(line), body))
    return Caught(messages, end, False)


def _resume(base: int, lines: list[bytes], mark: Mark) -> int | None:
    """The sequence number to read from for ``mark``, None when messages were lost."""
    if mark.next == 0:
        return 0 if base == 0 else None
    if mark.next == base:
        return base  # its last message was trimmed: every one after it is still here
    if base < mark.next <= base + len(lines) and ident_of(lines[mark.next - 1 - base]) == (
        mark.last
    ):
        return mark.next
    return None

"""Reliable delivery's progress cursor: one shard's record of how far its delivery got.

Before each payload runs, the deliverer holding the shard's lock writes the shard's cursor: the
payload (its end offset and frame id) with the attempts it will have counted if its run never
returns, when the delivery decided what was due, the payloads it rescheduled so far and how it
reads frames (:func:`~.held.reader`). A successor resumes from it (:meth:`Progress.resume`).

The text is ``<end>:<id>:<running>:<decided>:<rescheduled>:<reader>:<mac>``, written and read
here only. Anyone who can write the cache can write a cursor, so one is believed only when:

- with a secret key set, its ``mac`` (keyed BLAKE2b-128 over the other fields, the cursor key
  and the signal, with the first key; any key verifies) is ours, so a cursor is neither forged
  nor moved to another signal or shard;
- its decision time lies within :data:`MAX_AGE` before now and :data:`CLOCK_SKEW` after it,
  and each rescheduled due time within :data:`~gaesignals.timing.MAX_DELAY` (plus the skew)
  of now: a cursor cannot make a payload due early, nor get a payload re-signed for a time it
  never comes.

Any other cursor reads as absent (logged): the successor starts over, at least once as always.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, NamedTuple

from .. import frames
from ..stores import Connection
from ..timing import MAX_DELAY
from .lease import CLOCK_SKEW, MAX_LEASE, lock_expiry

logger = logging.getLogger("gaesignals")

#: The payloads one delivery reschedules in one shard before it stops there instead: each is
#: named in the cursor, rewritten before every payload.
MAX_RESCHEDULED = 16
#: How old a decision time a cursor may carry, in seconds: longer than any lock lives, so a
#: successor always comes sooner (a deliverer renewing its lock for that long is not one).
MAX_AGE = lock_expiry(MAX_LEASE) + CLOCK_SKEW
#: The longest ``reader`` field read (a planted cursor costs no more than a real one).
MAX_READER = 1024
#: Keyed BLAKE2b's personalisation: a cursor's MAC is never a frame's tag, nor one a tag.
_MAC_PERSON = b"gs cursor"
_MAC_HEX = 32
_BLOCK = 64  # the longest key BLAKE2b takes
_FIELDS = 7


class CursorState(enum.Enum):
    """What a shard's cursor key holds, as far as this delivery knows."""

    #: Nothing: there is nothing to remove when the shard is done.
    EMPTY = "empty"
    #: Bytes found when the shard was read (a cursor or not): removed when the shard is done.
    FOUND = "found"
    #: A cursor this delivery wrote: removed when the shard is done.
    WRITTEN = "written"


class Rescheduled(NamedTuple):
    """A payload rescheduled by a delivery: its frame id, its attempts and when it is due
    (Unix ms)."""

    ident: bytes
    attempts: int
    due: int


class Resume(NamedTuple):
    """Where a successor resumes: the index of the first payload to run, the attempts of that
    payload if its predecessor died running it (else None), when the predecessor decided what
    was due (Unix ms), what it rescheduled and how it read frames (those it held before
    ``first`` stay queued)."""

    first: int
    crashed: int | None
    decided: int
    rescheduled: tuple[Rescheduled, ...]
    reader: bytes


class Progress(NamedTuple):
    """One shard's cursor: the payload named (``end``, ``ident``), finished, or about to run
    with ``running`` attempts counted should that run never return; ``decided``, when what is
    due was decided (Unix ms); what was ``rescheduled``; and the deliverer's ``reader``."""

    end: int
    ident: bytes
    running: int | None
    decided: int
    rescheduled: tuple[Rescheduled, ...] = ()
    reader: bytes = b""

    def encode(self, where: str, signal: bytes, secret_keys: Sequence[bytes]) -> bytes:
        """The cursor's text for cursor key ``where`` of ``signal`` (a frame's signal key),
        with its MAC when a secret key is set."""
        fields = self._text()
        mac = _mac(secret_keys[0], where, signal, fields).hex().encode() if secret_keys else b""
        return fields + b":" + mac

    def _text(self) -> bytes:
        running = b"" if self.running is None else b"%d" % self.running
        again = b",".join(
            b"%s/%d/%d" % (r.ident.hex().encode(), r.attempts, r.due) for r in self.rescheduled
        )
        return b"%d:%s:%s:%d:%s:%s" % (
            self.end,
            self.ident.hex().encode(),
            running,
            self.decided,
            again,
            self.reader,
        )

    @classmethod
    def decode(
        cls, raw: bytes, where: str, signal: bytes, secret_keys: Sequence[bytes], now: int
    ) -> Progress | None:
        """The cursor ``raw`` (read from key ``where`` of ``signal``) holds, or None when it is
        not one to believe at ``now`` (Unix ms; see the module docstring)."""
        fields, _, mac = raw.rpartition(b":")
        if secret_keys and not _verified(secret_keys, where, signal, fields, mac):
            return None
        parts = fields.split(b":")
        if len(parts) != _FIELDS - 1:
            return None
        end, ident, running, decided, again, reader = parts
        if not (_number(end, 12) and _number(decided, 15) and len(reader) <= MAX_READER):
            return None
        if running and not _number(running, 5):
            return None
        if not now - MAX_AGE * 1000 <= int(decided) <= now + CLOCK_SKEW * 1000:
            return None
        rescheduled = _rescheduled(again, now)
        frame_id = _ident(ident)
        if rescheduled is None or frame_id is None:
            return None
        attempts = min(int(running), frames.MAX_ATTEMPTS_FIELD) if running else None
        return cls(int(end), frame_id, attempts, int(decided), rescheduled, reader)

    def resume(self, found: Sequence[frames.Frame]) -> Resume | None:
        """Where to resume among ``found`` (a shard's frames as read), or None when the cursor
        names none of them. Frame ids are random, so a cursor left over from an older value
        of the key never matches a frame of the new one."""
        for index, frame in enumerate(found):
            if frame.end == self.end and frame.ident == self.ident:
                first = index if self.running is not None else index + 1
                return Resume(first, self.running, self.decided, self.rescheduled, self.reader)
        return None


def _number(text: bytes, digits: int) -> bool:
    return 0 < len(text) <= digits and text.isdigit()


def _ident(text: bytes) -> bytes | None:
    if len(text) != 16:
        return None
    try:
        return bytes.fromhex(text.decode("ascii"))
    except ValueError:
        return None


def _rescheduled(text: bytes, now: int) -> tuple[Rescheduled, ...] | None:
    """The rescheduled payloads ``text`` names, or None if one is not in our form, or due
    further from ``now`` than a retry may wait."""
    entries = text.split(b",") if text else []
    if len(entries) > MAX_RESCHEDULED:
        return None
    found = []
    latest = now + (MAX_DELAY + CLOCK_SKEW) * 1000
    for entry in entries:
        fields = entry.split(b"/")
        if len(fields) != 3:
            return None
        ident, attempts, due = fields[0], fields[1], fields[2]
        frame_id = _ident(ident)
        if frame_id is None or not _number(attempts, 5) or not _number(due, 15):
            return None
        if int(due) > latest or int(attempts) > frames.MAX_ATTEMPTS_FIELD:
            return None
        found.append(Rescheduled(frame_id, int(attempts), int(due)))
    return tuple(found)


@lru_cache(maxsize=1024)
def _keyed(secret_key: bytes, where: str, signal: bytes) -> Any:
    """Keyed BLAKE2b-128 of ``secret_key`` (hashed first if longer than BLAKE2b takes), already
    fed the cursor key and the signal: the state each of that cursor's MACs copies."""
    if len(secret_key) > _BLOCK:
        secret_key = hashlib.blake2b(secret_key).digest()
    state = hashlib.blake2b(key=secret_key, digest_size=_MAC_HEX // 2, person=_MAC_PERSON)
    state.update(b"".join((where.encode(), b"\x00", signal, b"\x00")))
    return state


def _mac(secret_key: bytes, where: str, signal: bytes, fields: bytes) -> bytes:
    state = _keyed(secret_key, where, signal).copy()
    state.update(fields)
    mac: bytes = state.digest()
    return mac


def _verified(
    secret_keys: Sequence[bytes], where: str, signal: bytes, fields: bytes, mac: bytes
) -> bool:
    if len(mac) != _MAC_HEX:
        return False
    try:
        tag = bytes.fromhex(mac.decode("ascii"))
    except ValueError:
        return False
    return any(hmac.compare_digest(_mac(key, where, signal, fields), tag) for key in secret_keys)


class Cursor:
    """A shard's cursor key under a reliable deliverer's lock: read with the shard, then kept
    as the delivery goes (:meth:`keep`) and removed once the shard is done (:meth:`clear`)."""

    def __init__(
        self,
        conn: Connection,
        key: str,
        found: bytes,
        signal: bytes,
        secret_keys: Sequence[bytes],
    ) -> None:
        self.conn = conn
        self.key = key
        self.found = found
        self.signal = signal
        self.secret_keys = secret_keys
        self.state = CursorState.FOUND if found else CursorState.EMPTY

    def read(self, name: str, now: int) -> Progress | None:
        """The progress found in the key, or None (without one, or one not believed: logged
        and removed, so it is said once, and the shard's delivery starts over)."""
        if not self.found:
            return None
        progress = Progress.decode(self.found, self.key, self.signal, self.secret_keys, now)
        if progress is None:
            logger.warning(
                "the progress cursor of signal %r (%d byte(s)) is not one this deliverer "
                "wrote or believes (unsigned, forged, moved, or dated out of bounds); "
                "ignored: its payloads are delivered from the start",
                name,
                len(self.found),
            )
            self.clear()
        return progress

    def keep(self, progress: Progress) -> None:
        """Write ``progress`` to the key."""
        raw = progress.encode(self.key, self.signal, self.secret_keys)
        self.conn.set_many({self.key: raw})
        self.state = CursorState.WRITTEN

    def clear(self) -> None:
        """Remove the cursor once its shard is done (nothing to do if the key held nothing)."""
        if self.state is not CursorState.EMPTY:
            self.conn.delete_many([self.key])
            self.state = CursorState.EMPTY

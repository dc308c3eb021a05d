"""One server's socket, pinned for the life of a connection, and the exchanges on it: a
pipelined request and its reply lines, quiet meta commands, ``gets``, and the moves of a long
queue to segments and back (see :mod:`gaesignals.stores.segments`)."""

from __future__ import annotations

import logging
import socket
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

from ...exceptions import StoreUnavailable
from .. import Cached, segments
from ._wire import (
    NOT_A_NUMBER,
    is_refusal,
    read_lines,
    read_quiet,
    read_values,
    segment_flags,
    wire_key,
)

logger = logging.getLogger("gaesignals")

#: How many times a read of a segmented queue is made again after racing a delivery.
JOIN_ROUNDS = 3
#: How many times a move to a segment retries its cas after losing it to concurrent appends.
SPILL_ROUNDS = 4
#: The largest segment written at once (or max_value_size, if smaller: it is within ``-I``).
SEGMENT_PIECE = 4 * segments.SEGMENT_BYTES


class Token:
    """A CAS token, bound to the socket that read it (see :mod:`gaesignals.stores`)."""

    __slots__ = ("cas", "segments", "sock")

    def __init__(self, sock: socket.socket, cas: bytes, segments: Sequence[bytes] = ()) -> None:
        self.sock = sock
        self.cas = cas
        #: The wire keys of the segments the value was joined from (see .segments), deleted
        #: once a cas with this token has replaced it.
        self.segments = segments


class Unreachable(Exception):
    """The server refused or timed out the connection: nothing of the batch was sent."""

    def __init__(self, server: Any, error: BaseException) -> None:
        super().__init__(f"memcached at {server} is unreachable: {error}")
        self.server = server


class Parked(deque[Any]):
    """Clients of a ``PooledClient`` checked out of its pool for good, with an open socket,
    each handed to one caller at a time: ``pop`` and ``append`` on a deque are atomic, so a
    send takes one without the pool's lock and the scan of its used list (the pool still
    counts them as used; closing the ``PooledClient`` closes them too)."""

    def take(self, pool: Any) -> Any:
        """A parked client, or a client from ``pool`` when none is parked."""
        try:
            return self.pop()
        except IndexError:
            return pool.get()

    def close(self) -> None:
        """Close every parked client's socket and forget them (the pool forgets them too)."""
        while self:
            client = self.pop()
            client.close()


def _joined(key: str, value: bytes, limit: int) -> int:
    """The declared bytes of the segments a read of the queue ``value`` joins within ``limit``
    (pointers a read refuses, forged ones among them, are not counted)."""
    found = segments.pointers(value)[0]
    names = segments.plan(key, value, limit)[0]
    return sum(length for (_, length), name in zip(found, names, strict=True) if name is not None)


def _cas(item: Cached) -> bytes:
    """The cas unique of an item this module read (its token is always a :class:`Token`)."""
    return cast(Token, item.token).cas


def _segmented(key: bytes, value: bytes) -> bool:
    """Whether a value read is a queue kept in segments (pointers elsewhere are not followed)."""
    return value[:2] == segments.POINTER_MAGIC and segments.is_queue_key(key.decode("ascii"))


class Node:
    """One server's connection, pinned for the life of a connection."""

    def __init__(
        self,
        client: Any,
        piece: int,
        parked: Parked | None,
        *,
        limit: int,
    ) -> None:
        self.pool = getattr(client, "client_pool", None)
        self.parked = parked if self.pool is not None else None
        self.server = client.server
        if self.pool is None:
            self.client = client
        elif self.parked is not None:
            self.client = self.parked.take(self.pool)
        else:
            self.client = self.pool.get()
        self.prefix: bytes = self.client.key_prefix or b""
        self.failed = False
        #: The largest segment written at once (see write_segments).
        self.piece = piece
        #: The most bytes of segments one queue's read joins (see segments.plan).
        self.limit = limit

    def release(self) -> None:
        if self.pool is None:
            return
        if self.failed:
            self.pool.destroy(self.client)
        elif self.parked is not None and self.client.sock is not None:
            self.parked.append(self.client)
        else:
            self.pool.release(self.client)

    def socket(self) -> socket.socket:
        if self.client.sock is None:
            try:
                self.client._connect()  # pymemcache's own connect: timeouts, TLS, keepalive
            except OSError as error:
                self.failed = True
                raise Unreachable(self.server, error) from error
        sock: socket.socket = self.client.sock
        return sock

    def fail(self, error: BaseException) -> StoreUnavailable:
        self.failed = True
        self.client.close()
        return StoreUnavailable(f"memcached at {self.server} failed: {error}")

    def exchange(self, request: bytes, replies: int) -> list[bytes]:
        """Send one pipelined request and read one reply line per command."""
        try:
            sock = self.socket()
            sock.sendall(request)
            lines = read_lines(sock, replies)
        except (OSError, ConnectionError) as error:
            raise self.fail(error) from error
        for line in lines:
            if is_refusal(line):
                raise self.fail(ConnectionError(f"refused a command: {line!r}"))
        return lines

    def exchange_quiet(self, request: bytes) -> set[int]:
        """Send quiet meta commands and a closing ``mn``; return the opaque tokens (``O<i>``)
        of the commands that reported a failure (``EX``, ``NF``, ``NS``). Other lines a quiet
        command may still send (``HD`` when ``ma`` creates a counter, a counter key holding
        something else) are not failures of a write."""
        try:
            sock = self.socket()
            sock.sendall(request + b"mn\r\n")
            data = read_quiet(sock)
        except (OSError, ConnectionError) as error:
            raise self.fail(error) from error
        failed: set[int] = set()
        if len(data) == 4:
            return failed
        for line in data.split(b"\r\n")[:-2]:
            code, _, rest = line.partition(b" ")
            if code in (b"EX", b"NF", b"NS"):
                opaque = rest.rsplit(b" ", 1)[-1]
                if not (opaque.startswith(b"O") and opaque[1:].isdigit()):
                    raise self.fail(ConnectionError(f"a failure without its token: {line!r}"))
                failed.add(int(opaque[1:]))
            elif code != b"HD" and not line.endswith(NOT_A_NUMBER):
                raise self.fail(ConnectionError(f"refused a command: {line!r}"))
        return failed

    def gets(self, keys: list[bytes], *, join: bool = True) -> dict[bytes, Cached]:
        """Read ``keys`` with their CAS tokens (each a :class:`Token`); a queue kept in
        segments (``join``) comes back whole, its segments read from this server in one more
        round trip."""
        try:
            sock = self.socket()
            sock.sendall(b"gets " + b" ".join(self.prefix + k for k in keys) + b"\r\n")
            values = read_values(sock)
        except (OSError, ConnectionError, ValueError) as error:
            raise self.fail(error) from error
        plen = len(self.prefix)
        found = {key[plen:]: Cached(value, Token(sock, cas)) for key, value, cas in values}
        if join:
            spilled = [k for k, (value, _) in found.items() if _segmented(k, value)]
            if spilled:
                self._join(found, spilled)
        return found

    def _join(self, found: dict[bytes, Cached], spilled: list[bytes]) -> None:
        """Replace each spilled queue's value by its segments and frames (see .segments).

        A segment is deleted only after a cas replaced the value that pointed to it, so a
        segment missing while its queue key is unchanged was evicted; if the key changed, the
        read raced a delivery and is made again (a short value would look like lost payloads).
        """
        for round_ in range(JOIN_ROUNDS):
            layouts = {}
            wanted: list[bytes] = []
            for key in spilled:
                planned, start = segments.plan(key.decode("ascii"), found[key].value, self.limit)
                names = [None if n is None else n.encode("ascii") for n in planned]
                layouts[key] = (start, names)
                wanted.extend(n for n in names if n is not None)
            parts = self.gets(wanted, join=False) if wanted else {}
            missing = [
                k for k, (_, names) in layouts.items() if any(n and n not in parts for n in names)
            ]
            if round_ == JOIN_ROUNDS - 1:
                missing = []  # still racing: keep the short read (its cas will fail anyway)
            again = self.gets(missing, join=False) if missing else {}
            changed = [k for k in missing if k not in again or _cas(again[k]) != _cas(found[k])]
            for key, (start, names) in layouts.items():
                if key in changed:
                    continue
                value, token = found[key]
                cast(Token, token).segments = [n for n in names if n is not None]
                read = [
                    segments.REFUSED if n is None else parts[n].value if n in parts else None
                    for n in names
                ]
                joined = segments.join(value, start, read)
                found[key] = Cached(joined, token)
            if not changed:
                return
            for key in changed:
                if key in again:
                    found[key] = again[key]
                else:
                    del found[key]
            spilled = [k for k in changed if k in found and _segmented(k, found[k].value)]
            if not spilled:
                return

    def spill(self, key: str) -> None:
        """Move the frames of the queue at ``key`` to a new segment, leaving a pointer (see
        .segments): a read, an ``add`` of the segment, then a ``cas`` of the pointers, which a
        concurrent append or delivery makes fail (the segment is then deleted, nothing moved).

        Best effort, never raising: it runs after a send's append was stored, and a send that
        raised would be retried, storing its payload twice; an unmoved queue only stays long."""
        if not segments.is_queue_key(key):
            return  # only queues are kept in segments
        try:
            self._spill(key)
        except (StoreUnavailable, Unreachable) as error:
            logger.warning("could not move %s to a segment: %s", key, error)

    def _spill(self, key: str) -> None:
        wire = wire_key(key)
        found = self.gets([wire], join=False).get(wire)
        if found is None:
            return
        value, cas = found.value, _cas(found)
        start = segments.pointers(value)[1]
        if len(value) - start <= segments.SEGMENT_BYTES // 2:
            return  # moved already
        if _joined(key, value, self.limit) + len(value) - start > self.limit:
            # Past what a read joins (senders of other processes raced past max_value_size):
            # the frames stay in the key, whose size memcached bounds itself (-I), so every
            # payload stored stays readable and further appends are refused.
            return
        made = self.write_segments(wire, value, start)
        if made is None:
            return
        head, spilled, names = made
        tail = b""
        for _ in range(SPILL_ROUNDS):
            refused = self.exchange_quiet(
                b"ms %s %d C%s F%d q O0\r\n%s%s\r\n"
                % (
                    self.prefix + wire,
                    len(head) + len(tail),
                    cas,
                    segment_flags(spilled - len(head)),
                    head,
                    tail,
                )
            )
            if not refused:
                return
            # Lost to a concurrent append (the value read is still the key's head: the frames
            # after it stay in the key) or to a delivery (it is not: nothing is moved).
            found = self.gets([wire], join=False).get(wire)
            if found is None or not found.value.startswith(value):
                break
            tail, cas = found.value[len(value) :], _cas(found)
        self.delete_segments(names)

    def delete_segments(self, names: Sequence[bytes]) -> None:
        """Delete segments (wire keys) in one quiet pipeline; missing ones are no failure."""
        self.exchange_quiet(b"".join(b"md %s q O0\r\n" % (self.prefix + n) for n in names))

    def write_segments(
        self, wire: bytes, value: bytes, start: int
    ) -> tuple[bytes, int, list[bytes]] | None:
        """Write the frames of ``value`` (from ``start``, after its pointers) to new segments of
        the queue at ``wire``, in pieces no larger than :attr:`piece`; return the
        value's pointers with the new ones, the bytes they all name, and the new segments' wire
        keys; None if a segment could not be written (none is left behind)."""
        queue = wire.decode("ascii")
        pointers, names, parts = [value[:start]], [], []
        for offset in range(start, len(value), self.piece):
            piece = value[offset : offset + self.piece]
            ident = segments.new_id()
            name = segments.segment_key(queue, ident).encode("ascii")
            names.append(name)
            pointers.append(segments.pointer(ident, len(piece)))
            parts.append(b"add %s 0 0 %d\r\n%s\r\n" % (self.prefix + name, len(piece), piece))
        replies = self.exchange(b"".join(parts), len(parts))
        if any(reply != b"STORED" for reply in replies):
            self.delete_segments(names)
            return None
        spilled = segments.spilled_size(value[:start]) + len(value) - start
        return b"".join(pointers), spilled, names

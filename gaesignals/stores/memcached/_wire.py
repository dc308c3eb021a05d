"""The memcached text protocol on a socket: reading replies, and formatting the commands
that more than one room sends. Nothing here knows a server, a pool or a ring."""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from typing import Any

from ...exceptions import StoreFull, StoreUnavailable
from .. import home_key

#: The tail of the reply to arithmetic on a key that holds something else than a number: the
#: caller's to judge, not a dead server.
NOT_A_NUMBER = b"non-numeric value"
#: What memcached answers a write it has no memory for (run with ``-M``, it evicts nothing).
OUT_OF_MEMORY = b"SERVER_ERROR out of memory"

#: How much one ``recv`` asks for. Larger reads make CPython allocate and free a buffer that
#: size per call (mmap/munmap). Looked up at each call, so a benchmark can patch it.
READ_SIZE = 64 * 1024


def read_lines(sock: socket.socket, count: int) -> list[bytes]:
    """Read exactly ``count`` reply lines that carry no data block (store, arithmetic and
    meta replies): whole chunks, split once, instead of a line at a time."""
    data = sock.recv(READ_SIZE)
    if not data:
        raise ConnectionError("memcached closed the connection")
    if data.count(b"\r\n") < count:
        chunks = [data]
        seen = data.count(b"\r\n")
        while seen < count:
            chunk = sock.recv(READ_SIZE)
            if not chunk:
                raise ConnectionError("memcached closed the connection")
            # A line ending split across chunks is counted once the chunks are joined.
            seen += chunk.count(b"\r\n") + (chunks[-1][-1:] == b"\r" and chunk[:1] == b"\n")
            chunks.append(chunk)
        data = b"".join(chunks)
    lines = data.split(b"\r\n")
    if len(lines) != count + 1 or lines[-1]:
        raise ConnectionError(f"unexpected replies: {data[:200]!r}")
    del lines[-1]
    return lines


def read_values(sock: socket.socket) -> list[tuple[bytes, bytes, bytes]]:
    """Read the reply to ``gets``: (key, value, cas) for each ``VALUE`` block, up to
    ``END``. The buffer is parsed in place by offsets, whatever the chunks' boundaries."""
    buf = sock.recv(READ_SIZE)
    found: list[tuple[bytes, bytes, bytes]] = []
    pos = 0
    while True:
        end = buf.find(b"\r\n", pos)
        if end < 0:
            buf = _more(sock, buf, pos)
            pos = 0
            continue
        if end - pos == 3 and buf.startswith(b"END", pos):
            if end + 2 != len(buf):
                raise ConnectionError(f"unexpected data after END: {buf[end : end + 80]!r}")
            return found
        parts = buf[pos:end].split()
        if len(parts) != 5 or parts[0] != b"VALUE":
            raise ConnectionError(f"unexpected reply to gets: {buf[pos : pos + 80]!r}")
        start = end + 2
        stop = start + int(parts[3])
        if len(buf) < stop + 2:
            buf = _more(sock, buf, pos, stop + 2 - len(buf))
            start, stop, pos = start - pos, stop - pos, 0
        if buf[stop : stop + 2] != b"\r\n":
            raise ConnectionError("a value's length does not match its data")
        found.append((parts[1], buf[start:stop], parts[4]))
        pos = stop + 2


def read_quiet(sock: socket.socket) -> bytes:
    """Read the reply to quiet meta commands closed by ``mn``: every line up to ``MN``."""
    data = sock.recv(READ_SIZE)
    while not (data.endswith(b"\r\nMN\r\n") or data == b"MN\r\n"):
        chunk = sock.recv(READ_SIZE)
        if not chunk:
            raise ConnectionError("memcached closed the connection")
        data += chunk
    return data


def _more(sock: socket.socket, buf: bytes, keep: int, need: int = 1) -> bytes:
    """``buf`` from offset ``keep`` on, followed by at least ``need`` more bytes read from
    ``sock`` (joined once: a large value arriving in many chunks is copied once)."""
    chunks = [buf[keep:]]
    while need > 0:
        chunk = sock.recv(READ_SIZE)
        if not chunk:
            raise ConnectionError("memcached closed the connection")
        chunks.append(chunk)
        need -= len(chunk)
    return b"".join(chunks)


def is_refusal(line: bytes) -> bool:
    """Whether a reply line says the server refused a command (a counter key holding
    something else is no refusal of the connection: the caller judges it)."""
    return line.startswith((b"ERROR", b"CLIENT_ERROR")) and not line.endswith(NOT_A_NUMBER)


def check_memory(
    replies: Iterable[bytes], keys: Iterable[str], stored: Mapping[str, bool], server: object
) -> None:
    """Raise :class:`~gaesignals.exceptions.StoreFull` when a write of ``keys`` answered by
    ``replies`` was refused for want of memory (``stored``: what the call stored)."""
    for reply in replies:
        if reply.startswith(OUT_OF_MEMORY):
            results = {key: stored.get(key, False) for key in keys}
            raise StoreFull(f"memcached at {server} is out of memory", results)


def segment_flags(spilled: int) -> int:
    """The client flags that record how many more bytes a key's segments hold than its
    pointers take, within the 32 bits memcached keeps (tampered pointers may claim more)."""
    return min(max(spilled, 0), 0xFFFFFFFF)


def size_flags(reply: bytes) -> tuple[int, int]:
    """The size and client flags in a ``HD s<size> f<flags>`` reply: the bytes the key holds,
    and how many more its segments hold than its pointers take (see .segments)."""
    size, found, spilled = reply[4:].partition(b" f")  # on a send's hot path: one split
    if reply.startswith(b"HD s") and found and size.isdigit() and spilled.isdigit():
        return int(size), int(spilled)
    raise StoreUnavailable(f"memcached gave an unexpected reply to mg: {reply!r}")


def bump(wire: bytes, delta: int) -> bytes:
    """Meta arithmetic: add ``delta`` (a negative one subtracts, stopping at 0); a missing
    counter is created holding ``max(delta, 0)``, in the same command."""
    if delta >= 0:
        return b"ma %s N0 J%d D%d\r\n" % (wire, delta, delta)
    return b"ma %s MD N0 J0 D%d\r\n" % (wire, -delta)


def quiet_bumps(prefix: bytes, deltas: Mapping[str, int]) -> bytes:
    """:func:`bump` in quiet mode for many counters at once (formatted as text, encoded
    once: counters are bumped by the hundred on every delivery)."""
    start = prefix.decode("ascii")
    return "".join(
        f"ma {start}{key} N0 J{delta} D{delta} q\r\n"
        if delta >= 0
        else f"ma {start}{key} MD N0 J0 D{-delta} q\r\n"
        for key, delta in deltas.items()
    ).encode("ascii")


def wire_key(key: str) -> bytes:
    """The key as sent to memcached: a stranded copy's name (see
    :func:`~gaesignals.stores.stranded_key`) without its server."""
    return (key if " " not in key else home_key(key)).encode("ascii")


def where(server: Any) -> str:
    """A server's address as a key's location names it: ``host:port``."""
    return f"{server[0]}:{server[1]}" if isinstance(server, tuple) else str(server)

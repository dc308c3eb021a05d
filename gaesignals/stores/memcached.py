"""memcached through pymemcache: ``Client``, ``PooledClient`` or ``HashClient``.

pymemcache owns the sockets (connecting, timeouts, TLS, pooling, hashing keys over a cluster and
failing dead nodes over); this adapter speaks the text protocol on those sockets itself, for
three reasons pymemcache's API cannot serve:

* batching: it has no ``cas_many`` and no pipelining, so a CAS reset of 100 keys would cost 100
  round trips; here every batch is one write and one read per server;
* replies: pymemcache's ``default_noreply=True`` makes ``add`` report success for a key that
  exists; here every command waits for its reply;
* safety: values are always raw bytes, whatever flags the item carries and whatever serde the
  client was built with, so a pickled value planted in the cache is never unpickled here.

A CAS token is bound to the socket that read it (see :mod:`gaesignals.stores`).

A long queue is kept in segments (:mod:`gaesignals.stores.segments`) on its own server: an
append's size query (``mg <key> s f``) tells the key's bytes and, in its client flags, how many
more its segments hold; the sender that takes the key past a multiple of the segment size moves
its frames (:meth:`_Node.spill`), reads join the segments back (:meth:`_Node.gets`), and a
``cas`` deletes the segments of the value it replaced.

On a cluster (``HashClient``) a server that cannot be reached is taken out of the hash ring at
once (pymemcache's own dead-node bookkeeping, brought back after ``dead_timeout``), and a batch
whose server refused the connection is re-sent to the keys' new servers: nothing had been sent,
so nothing can be applied twice. Payloads sent while a server was away land on another server;
:meth:`_Connection.scan_many` reads every live server, so delivery finds them wherever they are.
"""

from __future__ import annotations

import logging
import os
import socket
import weakref
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from ..exceptions import ConfigurationError, PartialFailure, StoreUnavailable
from . import DEFAULT_MAX_VALUE_SIZE, segments

logger = logging.getLogger("gaesignals")

_NOT_A_NUMBER = b"non-numeric value"
#: Keys whose last seen size a store remembers (see ``append_many``); forgotten past this.
_SIZES_KEPT = 65536

#: How many times a read of a segmented queue is made again after racing a delivery.
_JOIN_ROUNDS = 3
#: How many times a move to a segment retries its cas after losing it to concurrent appends.
_SPILL_ROUNDS = 4
#: The largest segment written at once (or max_value_size, if smaller: it is within ``-I``).
_SEGMENT_PIECE = 4 * segments.SEGMENT_BYTES

# Larger reads make CPython allocate and free a buffer that size per call (mmap/munmap).
_READ_SIZE = 64 * 1024


class _Token:
    __slots__ = ("cas", "segments", "sock")

    def __init__(self, sock: socket.socket, cas: bytes, segments: Sequence[bytes] = ()) -> None:
        self.sock = sock
        self.cas = cas
        #: The wire keys of the segments the value was joined from (see .segments), deleted
        #: once a cas with this token has replaced it.
        self.segments = segments


def _read_lines(sock: socket.socket, count: int) -> list[bytes]:
    """Read exactly ``count`` reply lines that carry no data block (store, arithmetic and
    meta replies): whole chunks, split once, instead of a line at a time."""
    data = sock.recv(_READ_SIZE)
    if not data:
        raise ConnectionError("memcached closed the connection")
    if data.count(b"\r\n") < count:
        chunks = [data]
        seen = data.count(b"\r\n")
        while seen < count:
            chunk = sock.recv(_READ_SIZE)
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


def _read_values(sock: socket.socket) -> list[tuple[bytes, bytes, bytes]]:
    """Read the reply to ``gets``: (key, value, cas) for each ``VALUE`` block, up to
    ``END``. The buffer is parsed in place by offsets, whatever the chunks' boundaries."""
    buf = sock.recv(_READ_SIZE)
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


def _more(sock: socket.socket, buf: bytes, keep: int, need: int = 1) -> bytes:
    """``buf`` from offset ``keep`` on, followed by at least ``need`` more bytes read from
    ``sock`` (joined once: a large value arriving in many chunks is copied once)."""
    chunks = [buf[keep:]]
    while need > 0:
        chunk = sock.recv(_READ_SIZE)
        if not chunk:
            raise ConnectionError("memcached closed the connection")
        chunks.append(chunk)
        need -= len(chunk)
    return b"".join(chunks)


class _Unreachable(Exception):
    """The server refused or timed out the connection: nothing of the batch was sent."""

    def __init__(self, server: Any, error: BaseException) -> None:
        super().__init__(f"memcached at {server} is unreachable: {error}")
        self.server = server


class _Node:
    """One server's connection, pinned for the life of a :class:`_Connection`."""

    def __init__(self, client: Any) -> None:
        self.pool = getattr(client, "client_pool", None)
        self.server = client.server
        self.client = self.pool.get() if self.pool is not None else client
        self.prefix: bytes = self.client.key_prefix or b""
        self.failed = False
        #: The largest segment written at once (see write_segments).
        self.piece = _SEGMENT_PIECE

    def release(self) -> None:
        if self.pool is not None:
            if self.failed:
                self.pool.destroy(self.client)
            else:
                self.pool.release(self.client)

    def socket(self) -> socket.socket:
        if self.client.sock is None:
            try:
                self.client._connect()  # pymemcache's own connect: timeouts, TLS, keepalive
            except OSError as error:
                self.failed = True
                raise _Unreachable(self.server, error) from error
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
            lines = _read_lines(sock, replies)
        except (OSError, ConnectionError) as error:
            raise self.fail(error) from error
        for line in lines:
            # A counter key holding something else is the caller's to judge, not a dead node.
            if line.startswith((b"ERROR", b"CLIENT_ERROR")) and not line.endswith(_NOT_A_NUMBER):
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
            data = sock.recv(_READ_SIZE)
            while not (data.endswith(b"\r\nMN\r\n") or data == b"MN\r\n"):
                chunk = sock.recv(_READ_SIZE)
                if not chunk:
                    raise ConnectionError("memcached closed the connection")
                data += chunk
        except (OSError, ConnectionError) as error:
            raise self.fail(error) from error
        refused: set[int] = set()
        if len(data) == 4:
            return refused
        for line in data.split(b"\r\n")[:-2]:
            code, _, flags = line.partition(b" ")
            if code in (b"EX", b"NF", b"NS"):
                opaque = flags.rsplit(b" ", 1)[-1]
                if not (opaque.startswith(b"O") and opaque[1:].isdigit()):
                    raise self.fail(ConnectionError(f"a failure without its token: {line!r}"))
                refused.add(int(opaque[1:]))
            elif code != b"HD" and not line.endswith(_NOT_A_NUMBER):
                raise self.fail(ConnectionError(f"refused a command: {line!r}"))
        return refused

    def gets(self, keys: list[bytes], *, join: bool = True) -> dict[bytes, tuple[bytes, _Token]]:
        """Read ``keys`` with their CAS tokens; a queue kept in segments (``join``) comes back
        whole, its segments read from this server in one more round trip."""
        try:
            sock = self.socket()
            sock.sendall(b"gets " + b" ".join(self.prefix + k for k in keys) + b"\r\n")
            values = _read_values(sock)
        except (OSError, ConnectionError, ValueError) as error:
            raise self.fail(error) from error
        plen = len(self.prefix)
        found = {key[plen:]: (value, _Token(sock, cas)) for key, value, cas in values}
        if join:
            spilled = [k for k, (value, _) in found.items() if value[:2] == segments.POINTER_MAGIC]
            if spilled:
                self._join(found, spilled)
        return found

    def _join(self, found: dict[bytes, tuple[bytes, _Token]], spilled: list[bytes]) -> None:
        """Replace each spilled queue's value by its segments and frames (see .segments).

        A segment is deleted only after a cas replaced the value that pointed to it, so a
        segment missing while its queue key is unchanged was evicted; if the key changed, the
        read raced a delivery and is made again (a short value would look like lost payloads).
        """
        for round_ in range(_JOIN_ROUNDS):
            layouts = {}
            wanted: list[bytes] = []
            for key in spilled:
                pointers, start = segments.pointers(found[key][0])
                names = [
                    n.encode("ascii") for n in segments.segment_keys(key.decode("ascii"), pointers)
                ]
                layouts[key] = (start, names)
                wanted.extend(names)
            parts = self.gets(wanted, join=False)
            missing = [k for k, (_, names) in layouts.items() if any(n not in parts for n in names)]
            if round_ == _JOIN_ROUNDS - 1:
                missing = []  # still racing: keep the short read (its cas will fail anyway)
            again = self.gets(missing, join=False) if missing else {}
            changed = [k for k in missing if k not in again or again[k][1].cas != found[k][1].cas]
            for key, (start, names) in layouts.items():
                if key in changed:
                    continue
                value, token = found[key]
                token.segments = names
                joined = segments.join(
                    value, start, [parts[n][0] if n in parts else None for n in names]
                )
                found[key] = (joined, token)
            if not changed:
                return
            for key in changed:
                if key in again:
                    found[key] = again[key]
                else:
                    del found[key]
            spilled = [
                k for k in changed if k in found and found[k][0][:2] == segments.POINTER_MAGIC
            ]
            if not spilled:
                return

    def spill(self, key: str) -> None:
        """Move the frames of the queue at ``key`` to a new segment, leaving a pointer (see
        .segments): a read, an ``add`` of the segment, then a ``cas`` of the pointers, which a
        concurrent append or delivery makes fail (the segment is then deleted, nothing moved).

        Best effort, never raising: it runs after a send's append was stored, and a send that
        raised would be retried, storing its payload twice; an unmoved queue only stays long."""
        try:
            self._spill(key)
        except (StoreUnavailable, _Unreachable) as error:
            logger.warning("gaesignals: could not move %s to a segment: %s", key, error)

    def _spill(self, key: str) -> None:
        wire = _wire(key)
        found = self.gets([wire], join=False).get(wire)
        if found is None:
            return
        value, token = found
        start = segments.pointers(value)[1]
        if len(value) - start <= segments.SEGMENT_BYTES // 2:
            return  # moved already
        made = self.write_segments(wire, value, start)
        if made is None:
            return
        head, spilled, names = made
        tail = b""
        for _ in range(_SPILL_ROUNDS):
            refused = self.exchange_quiet(
                b"ms %s %d C%s F%d q O0\r\n%s%s\r\n"
                % (
                    self.prefix + wire,
                    len(head) + len(tail),
                    token.cas,
                    _flags(spilled - len(head)),
                    head,
                    tail,
                )
            )
            if not refused:
                return
            # Lost to a concurrent append (the value read is still the key's head: the frames
            # after it stay in the key) or to a delivery (it is not: nothing is moved).
            found = self.gets([wire], join=False).get(wire)
            if found is None or not found[0].startswith(value):
                break
            tail, token = found[0][len(value) :], found[1]
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


class _Connection:
    """Groups each batch by server and sends it as one pipelined request per server.

    A key may carry a location, ``"<key> <host:port>"`` (a space never occurs in a memcached
    key): that is how :meth:`scan_many` names a copy found away from the key's home server,
    and such a key is routed to that server, not hashed.
    """

    def __init__(self, store: MemcachedStore) -> None:
        self.store = store
        self.nodes: dict[Any, _Node] = {}

    def close(self) -> None:
        for node in self.nodes.values():
            node.release()
        self.nodes.clear()

    # A class, not @contextmanager: it is entered on every send, and a generator costs 1 us.
    def __enter__(self) -> _Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _node(self, client: Any) -> _Node:
        node = self.nodes.get(client.server)
        if node is None or node.failed:
            if node is not None:
                node.release()
            node = self.nodes[client.server] = _Node(client)
            node.piece = min(_SEGMENT_PIECE, self.store.max_value_size)
        return node

    def _each_server(
        self,
        keys: Sequence[str],
        operation: Callable[[_Node, list[str]], None],
        result: Mapping[str, object] | None = None,
    ) -> None:
        """Run ``operation`` once per server on its keys; when a server is unreachable, drop it
        from the ring and run its (unlocated) keys again on their new servers.

        A server that took the request but failed to answer does not stop the others: their
        parts still run, then :class:`PartialFailure` carries ``result`` (the answers of the
        servers that did answer), so a caller never loses what it won elsewhere."""
        if not self.store.hashed:  # one server: no grouping, no rerouting
            node = self._node(self.store.client)
            try:
                operation(node, list(keys))
            except _Unreachable as error:
                raise StoreUnavailable(str(error)) from error
            return
        pending = list(keys)
        failure: StoreUnavailable | None = None
        for _ in range(self.store.max_reroutes()):
            groups: dict[_Node, list[str]] = defaultdict(list)
            for key in pending:
                groups[self._node(self.store.client_for(key))].append(key)
            pending = []
            for node, group in groups.items():
                try:
                    operation(node, group)
                except _Unreachable as error:
                    self.store.server_failed(node.server)
                    if not self.store.hashed:
                        raise StoreUnavailable(str(error)) from error
                    pending.extend(k for k in group if " " not in k)
                except StoreUnavailable as error:
                    # Sent but unanswered (a hang, a crash mid-reply): the batch may have been
                    # applied, so it is not re-sent; later calls go around the server.
                    self.store.server_failed(node.server)
                    if not self.store.hashed:
                        raise
                    failure = failure or error
            if not pending:
                break
        else:
            failure = failure or StoreUnavailable(
                "no reachable memcached server for " + ", ".join(pending[:5])
            )
        if failure is not None:
            raise PartialFailure(str(failure), dict(result or {})) from failure

    def gets_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, object]]:
        result: dict[str, tuple[bytes, object]] = {}

        sizes = self.store.sizes

        def read(node: _Node, group: list[str]) -> None:
            wires = [k.encode("ascii") if " " not in k else _wire(k) for k in group]
            found = node.gets(wires)
            seen: dict[str, int] = {}
            for key, wire in zip(group, wires, strict=True):
                item = found.get(wire)
                if item is not None:
                    result[key] = item
                    if " " not in key:
                        seen[key] = len(item[0])
                else:
                    sizes.pop(key, None)
            sizes.note(seen)

        self._each_server(keys, read, result)
        return result

    def scan_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, object]]:
        """Like :meth:`gets_many`, but on a cluster also read every other live server, where
        payloads sent while a key's home server was away are stranded. Non-empty copies found
        away from home come back as ``"<key> <host:port>"``."""
        if not self.store.hashed:
            return self.gets_many(keys)
        result = self.gets_many(keys)
        homes = {key: self.store.client_for(key).server for key in keys}
        wire = [_wire(k) for k in keys]
        for client in self.store.live_clients():
            if all(home == client.server for home in homes.values()):
                continue
            node = self._node(client)
            try:
                found = node.gets(wire)
            except (_Unreachable, StoreUnavailable) as error:
                self.store.server_failed(node.server)
                logger.warning("gaesignals: skipped %s while scanning: %s", node.server, error)
                continue
            where = _where(client.server)
            for key, raw in zip(keys, wire, strict=True):
                item = found.get(raw)
                if item is not None and item[0] and homes[key] != client.server:
                    result[f"{key} {where}"] = item
        return result

    def _store(self, command: bytes, items: Mapping[str, bytes], expire: int) -> dict[str, bool]:
        """``add`` or ``set`` each item, pipelined per server."""
        result: dict[str, bool] = {}
        sizes = self.store.sizes
        limit = self.store.max_value_size

        def write(node: _Node, group: list[str]) -> None:
            parts: list[bytes] = []
            sent: list[str] = []
            for key in group:
                value = items[key]
                if len(value) > limit:
                    result[key] = False
                    continue
                parts.append(
                    b"%s %s 0 %d %d\r\n%s\r\n"
                    % (command, node.prefix + _wire(key), expire, len(value), value)
                )
                sent.append(key)
            if sent:
                replies = node.exchange(b"".join(parts), len(sent))
                for key, reply in zip(sent, replies, strict=True):
                    result[key] = reply == b"STORED"
                    if result[key] and " " not in key:
                        sizes[key] = len(items[key])

        self._each_server(list(items), write, result)
        return result

    def cas_many(
        self,
        items: Mapping[str, tuple[bytes, object]],
        expire: int = 0,
        counters: Mapping[str, int] | None = None,
    ) -> dict[str, bool]:
        """Meta commands in quiet mode (``ms <key> <size> C<cas> q``, ``ma ... q``, then
        ``mn``): the server answers only what failed, so a reset of 100 keys with its counters
        comes back as one line. Each command carries its index as an opaque token (``O<i>``),
        which is how a failure names its key."""
        result: dict[str, bool] = {}
        sizes = self.store.sizes
        counts = {k: v for k, v in (counters or {}).items() if k not in items}
        if counts and self.store.hashed:
            # Servers answer independently: the counters must land before any write does.
            try:
                self.incr_many(counts)
            except PartialFailure as error:  # nothing was written: not a partial write
                raise StoreUnavailable(str(error)) from error
            counts = {}
        ttl = b" T%d" % expire if expire else b""

        limit = self.store.max_value_size

        def write(node: _Node, group: list[str]) -> None:
            parts: list[bytes] = []
            sent: list[str] = []
            classic: list[tuple[str, bytes]] = []
            moved: dict[str, list[bytes]] = {}
            sock = node.socket()
            prefix = node.prefix
            if counts:  # one server (a cluster's went first): ahead of the writes, same pipeline
                parts.append(_quiet_bumps(prefix, counts))
            for key in group:
                value, token = items[key]
                # A token from another socket may predate a restart: refuse, never compare.
                if not isinstance(token, _Token) or token.sock is not sock:
                    result[key] = False
                    continue
                wire = key.encode("ascii") if " " not in key else _wire(key)
                flags = b""
                if len(value) > segments.SEGMENT_BYTES:
                    # Keep the value the key holds small (see .segments): the frames go to new
                    # segments first, so an acknowledgement of a long queue (even one that
                    # overshot max_value_size) never meets the server's item limit.
                    start = segments.pointers(value)[1]
                    made = None
                    if len(value) - start > segments.SEGMENT_BYTES:
                        made = node.write_segments(wire, value, start)
                    if made is not None:
                        value, spilled, moved[key] = made
                        flags = b" F%d" % _flags(spilled - len(value))
                if len(value) > limit:
                    # A value no segment could take: the server's own limit decides. Not
                    # with ms, which on a value too large deletes the key.
                    classic.append((key, token.cas))
                    continue
                parts.append(
                    b"ms %s%s %d C%s%s%s q O%d\r\n%s\r\n"
                    % (prefix, wire, len(value), token.cas, ttl, flags, len(sent), value)
                )
                sent.append(key)
            if parts:
                refused = node.exchange_quiet(b"".join(parts))
                result.update(dict.fromkeys(sent, True))
                for index in refused:
                    if index < len(sent):  # a token this batch did not send names nothing
                        result[sent[index]] = False
            if classic:
                request = b"".join(
                    b"cas %s 0 %d %d %s\r\n%s\r\n"
                    % (prefix + _wire(key), expire, len(items[key][0]), cas, items[key][0])
                    for key, cas in classic
                )
                replies = node.exchange(request, len(classic))
                for (key, _), reply in zip(classic, replies, strict=True):
                    result[key] = reply == b"STORED"
                    sent.append(key)
            sizes.note({k: len(items[k][0]) for k in sent if result[k] and " " not in k})
            # Segments of the values just replaced hold nothing any reader will find again.
            spent = [
                name for key in sent if result[key] for name in cast(_Token, items[key][1]).segments
            ]
            # Segments made for a cas that failed were never pointed to.
            spent += [name for key, names in moved.items() if not result[key] for name in names]
            if spent:
                try:
                    node.delete_segments(spent)
                except StoreUnavailable:  # the writes stand; the segments wait for eviction
                    logger.warning("gaesignals: could not delete spent segments", exc_info=True)

        self._each_server(list(items), write, result)
        return result

    def add_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        return self._store(b"add", items, expire)

    def set_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        return self._store(b"set", items, expire)

    def append_many(
        self, items: Mapping[str, bytes], counters: Mapping[str, int] | None = None
    ) -> dict[str, bool]:
        """Append, and learn each item's new size in the same round trip (``mg <key> s``,
        memcached 1.6+); ``counters`` are bumped in that round trip too, after the appends.

        A key this store has not seen yet gets an ``add`` of the same value right after its
        ``append`` (one of the two stores it), so a signal's first send does not bump its
        ``sent`` counter ahead of a failed append. memcached appends up to its own item
        limit (``-I``), not ``max_value_size``: an append that the size last seen
        (:attr:`MemcachedStore.sizes`, from an append or a read) says would pass the limit is
        not sent but reported False (:func:`~gaesignals.signals.append_frames` checks first,
        so its counters never go out for it); concurrent senders may take a queue past the
        limit by the payloads they append at once, never past ``-I``. An append is never taken back:
        rewriting a queue under a reliable deliverer's lock would break its acknowledgement."""
        result: dict[str, bool] = {}
        sizes = self.store.sizes
        limit = self.store.max_value_size

        def write(node: _Node, group: list[str]) -> None:
            parts: list[bytes] = []
            sent: list[str] = []
            both: set[str] = set()
            for key in group:
                wire = node.prefix + _wire(key)
                if key not in items:
                    parts.append(_bump(wire, counts[key]))
                    sent.append(key)
                    continue
                value = items[key]
                if len(value) + sizes.get(key, 0) > limit:
                    result[key] = False  # the caller reads the key (refreshing its size)
                    continue
                parts.append(b"append %s 0 0 %d\r\n%s\r\n" % (wire, len(value), value))
                sent.append(key)
                if key not in sizes:
                    parts.append(b"add %s 0 0 %d\r\n%s\r\n" % (wire, len(value), value))
                    sent.append(key)
                    both.add(key)
                parts.append(b"mg %s s f\r\n" % wire)
                sent.append(key)
            if not sent:
                return
            replies = iter(node.exchange(b"".join(parts), len(sent)))
            full = []
            for key in dict.fromkeys(sent):
                if key in items:
                    stored = next(replies) == b"STORED"
                    if key in both:
                        stored = next(replies) == b"STORED" or stored
                    result[key] = stored
                    size = next(replies)
                    if size.startswith(b"HD s"):
                        here, spilled = _size_flags(size)
                        sizes[key] = here + spilled
                        if stored and segments.crossed(here, len(items[key])):
                            full.append(key)
                else:
                    next(replies)
            for key in full:
                node.spill(key)

        counts = {k: v for k, v in (counters or {}).items() if k not in items}
        self._each_server([*items, *counts], write, result)
        return {key: result.get(key, False) for key in items}

    def spill(self, key: str) -> None:
        """Move the frames of the queue at ``key`` to a segment, on its server (see
        :meth:`_Node.spill`)."""
        try:
            self._each_server([key], lambda node, group: node.spill(group[0]))
        except StoreUnavailable as error:  # no server for it now: the queue only stays long
            logger.warning("gaesignals: could not move %s to a segment: %s", key, error)

    def incr_many(self, deltas: Mapping[str, int]) -> None:
        """Add each delta to a decimal counter, creating a missing one (meta arithmetic)."""

        def bump(node: _Node, group: list[str]) -> None:
            node.exchange_quiet(_quiet_bumps(node.prefix, {k: deltas[k] for k in group}))

        if deltas:
            self._each_server(list(deltas), bump)

    def delete_many(self, keys: Sequence[str]) -> None:
        def delete(node: _Node, group: list[str]) -> None:
            request = b"".join(b"delete %s\r\n" % (node.prefix + _wire(k)) for k in group)
            node.exchange(request, len(group))

        self._each_server(keys, delete)


class _Sizes(dict[str, int]):
    """Last seen sizes of keys, forgotten wholesale when there are too many (a miss only
    costs an append that memcached's own limit still bounds)."""

    def __setitem__(self, key: str, size: int) -> None:
        if len(self) >= _SIZES_KEPT and key not in self:
            self.clear()
        super().__setitem__(key, size)

    def note(self, sizes: Mapping[str, int]) -> None:
        """Many sizes at once (a batch's): one check of the count, not one per key."""
        if len(self) + len(sizes) > _SIZES_KEPT:
            self.clear()
        self.update(sizes)


def _flags(spilled: int) -> int:
    """The client flags that record how many more bytes a key's segments hold than its
    pointers take, within the 32 bits memcached keeps (tampered pointers may claim more)."""
    return min(max(spilled, 0), 0xFFFFFFFF)


def _size_flags(reply: bytes) -> tuple[int, int]:
    """The size and client flags in a ``HD s<size> f<flags>`` reply: the bytes the key holds,
    and how many more its segments hold than its pointers take (see .segments)."""
    size, found, spilled = reply[4:].partition(b" f")  # on a send's hot path: one split
    if reply.startswith(b"HD s") and found and size.isdigit() and spilled.isdigit():
        return int(size), int(spilled)
    raise StoreUnavailable(f"memcached gave an unexpected reply to mg: {reply!r}")


def _bump(wire: bytes, delta: int, flags: bytes = b"") -> bytes:
    """Meta arithmetic: add ``delta`` (a negative one subtracts, stopping at 0); a missing
    counter is created holding ``max(delta, 0)``, in the same command."""
    if delta >= 0:
        return b"ma %s N0 J%d D%d%s\r\n" % (wire, delta, delta, flags)
    return b"ma %s MD N0 J0 D%d%s\r\n" % (wire, -delta, flags)


def _quiet_bumps(prefix: bytes, deltas: Mapping[str, int]) -> bytes:
    """:func:`_bump` in quiet mode for many counters at once (formatted as text, encoded
    once: counters are bumped by the hundred on every delivery)."""
    start = prefix.decode("ascii")
    return "".join(
        f"ma {start}{key} N0 J{delta} D{delta} q\r\n"
        if delta >= 0
        else f"ma {start}{key} MD N0 J0 D{-delta} q\r\n"
        for key, delta in deltas.items()
    ).encode("ascii")


def _wire(key: str) -> bytes:
    """The key as sent to memcached: without any location suffix."""
    return key.partition(" ")[0].encode("ascii")


def _where(server: Any) -> str:
    return f"{server[0]}:{server[1]}" if isinstance(server, tuple) else str(server)


#: Every MemcachedStore of this process, so that a forked child can mark theirs (see _let_go).
_stores: weakref.WeakSet[MemcachedStore] = weakref.WeakSet()


def _after_fork() -> None:
    for store in list(_stores):
        store._inherited = True


os.register_at_fork(after_in_child=_after_fork)


class MemcachedStore:
    """Pending payloads on memcached, through a ready pymemcache client.

    Pass a ``Client`` (one thread), a ``PooledClient`` (thread-safe) or a ``HashClient`` (a
    cluster; build it with ``use_pooling=True`` for threads). The client's serde is never used.
    ``max_value_size`` must not exceed the server's item limit (``-I``, 1 MiB by default).
    """

    supports_append = True
    shared = True
    native = None

    def __init__(self, client: Any, *, max_value_size: int = DEFAULT_MAX_VALUE_SIZE) -> None:
        self.client = client
        self.max_value_size = max_value_size
        self.hashed = hasattr(client, "clients") and hasattr(client, "hasher")
        self._pool = getattr(client, "client_pool", None)
        #: Set in a forked child: the sockets it inherited are its parent's (see _after_fork).
        self._inherited = False
        _stores.add(self)
        #: The size each key had when this process last appended to it or read it.
        self.sizes = _Sizes()
        self.fast_send: MemcachedStore | None = self

    def __repr__(self) -> str:
        servers = sorted(self.client.clients) if self.hashed else [self.client.server]
        return f"MemcachedStore({', '.join(map(str, servers))})"

    @classmethod
    def from_url(cls, url: str) -> MemcachedStore:
        """Build from ``memcached://host:port[,host:port...][?timeout=S&max_value_size=N]``.

        One server gives a ``PooledClient``; several a pooling ``HashClient``. Every call has a
        timeout (default 3 seconds), so a hung server raises instead of blocking a request.
        """
        from pymemcache.client.base import PooledClient
        from pymemcache.client.hash import HashClient

        parts = urlsplit(url)
        if parts.scheme != "memcached" or not parts.netloc:
            raise ConfigurationError(f"not a memcached:// URL: {url!r}")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            timeout = float(query.pop("timeout", "3"))
            max_value_size = int(query.pop("max_value_size", str(DEFAULT_MAX_VALUE_SIZE)))
        except ValueError as error:
            raise ConfigurationError(f"bad option in {url!r}: {error}") from error
        if query:
            raise ConfigurationError(f"unknown options in {url!r}: {', '.join(sorted(query))}")
        servers = []
        for spec in parts.netloc.split(","):
            host, sep, port = spec.strip().rpartition(":")
            if not sep or not port.isdigit() or not host:
                raise ConfigurationError(f"expected host:port, got {spec!r} in {url!r}")
            servers.append((host.strip("[]"), int(port)))
        options: dict[str, Any] = {
            "connect_timeout": timeout,
            "timeout": timeout,
            "no_delay": True,
            "default_noreply": False,
        }
        if len(servers) == 1:
            return cls(PooledClient(servers[0], **options), max_value_size=max_value_size)
        hashed = HashClient(servers, use_pooling=True, retry_attempts=0, dead_timeout=5, **options)
        return cls(hashed, max_value_size=max_value_size)

    def close(self) -> None:
        """Close every socket the client holds (they reopen on next use)."""
        self.client.close()

    def connection(self) -> _Connection:
        """A connection that pins one socket per server until its ``with`` block ends."""
        if self._inherited:
            self._let_go()
        return _Connection(self)

    def _let_go(self) -> None:
        """In a forked child, before its first call: drop the parent's sockets (closing the
        child's copies only; the parent's connections stay up) so that the two processes never
        talk over one connection, reading each other's replies. The next call reconnects."""
        self._inherited = False
        self.client.close()

    def append_one(self, key: str, value: bytes, counter: str | None) -> bool | None:
        """One send's append, in the fewest steps: ``append``, ``mg <key> s`` and the
        ``counter`` bump pipelined on an already open socket, as :meth:`_Connection.append_many`
        does for a key it has seen, without its batching machinery.

        Returns None when it sent nothing and the general path must (a cluster, a key this
        process has not seen, a value the last seen size says would overflow, a socket not yet
        open); True when stored; False when the append was refused but the counter went out.
        """
        if self.hashed:
            return None
        if self._inherited:
            self._let_go()
        sizes = self.sizes
        size = sizes.get(key)
        if size is None or size + len(value) > self.max_value_size:
            return None
        pool = self._pool
        client = pool.get() if pool is not None else self.client
        sock = client.sock
        if sock is None:
            if pool is not None:
                pool.release(client)
            return None
        wire = client.key_prefix + key.encode("ascii")
        request = b"append %s 0 0 %d\r\n%s\r\nmg %s s f\r\n" % (wire, len(value), value, wire)
        replies = 2
        if counter is not None:
            request += _bump(client.key_prefix + counter.encode("ascii"), 1)
            replies = 3
        try:
            sock.sendall(request)
            data = sock.recv(_READ_SIZE)
            while data.count(b"\r\n") < replies:
                more = sock.recv(_READ_SIZE)
                if not more:
                    raise ConnectionError("memcached closed the connection")
                data += more
            lines = data.split(b"\r\n")
            if not (lines[0] == b"STORED" and lines[-2] == b"HD" and len(lines) == 4) and (
                len(lines) != replies + 1
                or any(
                    line.startswith((b"ERROR", b"CLIENT_ERROR"))
                    and not line.endswith(_NOT_A_NUMBER)
                    for line in lines
                )
            ):
                raise ConnectionError(f"unexpected replies to an append: {data[:200]!r}")
        except (OSError, ConnectionError) as error:
            client.close()
            if pool is not None:
                pool.destroy(client)
            raise StoreUnavailable(f"memcached at {client.server} failed: {error}") from error
        if pool is not None:
            pool.release(client)
        answer = lines[1]
        stored: bool = lines[0] == b"STORED"
        if answer.startswith(b"HD s"):
            here, spilled = _size_flags(answer)
            dict.__setitem__(sizes, key, here + spilled)  # known key: no need to make room
            if here > segments.SEGMENT_BYTES and stored and segments.crossed(here, len(value)):
                with self.connection() as conn:
                    conn.spill(key)
        else:
            sizes.pop(key, None)  # gone: the general path appends and adds
        return stored

    # -- the only places that reach into pymemcache's HashClient bookkeeping -------------------

    def client_for(self, key: str) -> Any:
        """The node client for a key: its location if it names one, else its hash-ring home."""
        if not self.hashed:
            return self.client
        base, _, where = key.partition(" ")
        if where:
            for client in self.client.clients.values():
                if _where(client.server) == where:
                    return client
            raise StoreUnavailable(f"memcached at {where} is no longer configured")
        try:
            client = self.client._get_client(base)
        except Exception as error:  # pymemcache raises MemcacheError when every node is down
            raise StoreUnavailable(f"no memcached server for {base!r}: {error}") from error
        if client is None:
            raise StoreUnavailable(f"no memcached server for {base!r}: all servers are down")
        return client

    def live_clients(self) -> list[Any]:
        if not self.hashed:
            return [self.client]
        dead = self.client._dead_clients
        return [c for c in self.client.clients.values() if c.server not in dead]

    def server_failed(self, server: Any) -> None:
        """Count a failure; past the client's ``retry_attempts`` the server leaves the ring."""
        if not self.hashed:
            return
        client = self.client
        if server in client._dead_clients:
            return
        client._mark_failed_server(server)
        failed = client._failed_clients.get(server)
        if failed is not None and failed["attempts"] >= client.retry_attempts:
            client.remove_server(server)

    def max_reroutes(self) -> int:
        if not self.hashed:
            return 1
        attempts: int = max(self.client.retry_attempts, 0)
        return len(self.client.clients) * (attempts + 1) + 1

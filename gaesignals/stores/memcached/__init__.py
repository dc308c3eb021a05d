"""memcached through pymemcache: ``Client``, ``PooledClient`` or ``HashClient``.

pymemcache owns the sockets (connecting, timeouts, TLS, pooling, hashing keys over a cluster and
failing dead nodes over); this adapter speaks the text protocol on those sockets itself, for
three reasons pymemcache's API cannot serve:

* batching: it has no ``cas_many`` and no pipelining, and no meta commands (``mg``, ``ms``,
  ``ma``, quiet mode), so a CAS reset of 100 keys would cost 100 round trips and a send could
  not learn its key's new size; here every batch is one write and one read per server;
* replies: pymemcache's ``default_noreply=True`` makes ``add`` report success for a key that
  exists; here every command waits for its reply;
* safety: values are always raw bytes, whatever flags the item carries and whatever serde the
  client was built with, so a pickled value planted in the cache is never unpickled here.

That takes these pymemcache internals, and no others: a ``Client``'s ``sock`` (the open socket,
or None), ``_connect()`` (its own connect, with its timeouts, TLS and keepalive), ``server``
and ``key_prefix``; a ``PooledClient``'s ``client_pool`` (``get``, ``release``, ``destroy``),
to pin one socket per connection; a ``HashClient``'s ``clients``, ``_get_client`` (its hasher's
choice of node), ``_dead_clients``, ``_failed_clients``, ``_mark_failed_server`` and
``retry_attempts`` (its dead-node bookkeeping, kept so that a server fails over as pymemcache's
own calls would make it). Only :mod:`._node` touches a socket's client and only :mod:`._ring`
the ``HashClient``, but for the send fast path below (:meth:`MemcachedStore.append_one`).

The rooms: :mod:`._wire` reads replies off a socket and formats commands; :mod:`._node` is one
server's pinned socket and its exchanges, segments included; :mod:`._ring` routes keys to
servers and handles a server failing; :mod:`._writes` holds a server's part of the two long
batched writes; :mod:`._connection` is the :class:`~gaesignals.stores.Connection` protocol.

A long queue is kept in segments (:mod:`gaesignals.stores.segments`) on its own server: an
append's size query (``mg <key> s f``) tells the key's bytes and, in its client flags, how many
more its segments hold; the sender that takes the key past a multiple of the segment size moves
its frames (:meth:`~._node.Node.spill`), reads join the segments back (:meth:`~._node.Node.gets`),
and a ``cas`` deletes the segments of the value it replaced.

On a cluster a server that cannot be reached is taken out of the hash ring at once, and a batch
whose server refused the connection is re-sent to the keys' new servers (see :mod:`._ring`).
Payloads sent while a server was away land on another server;
:meth:`~._connection.Connection.scan_many` reads every live server, so delivery finds them.
"""

from __future__ import annotations

import os
import socket
import weakref
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..._extras import requires
from ...exceptions import ConfigurationError, StoreUnavailable
from .. import DEFAULT_MAX_VALUE_SIZE, masked_url, segments
from . import _wire
from ._connection import Connection
from ._node import Parked
from ._ring import Ring
from ._sizes import Sizes
from ._wire import bump, is_refusal, size_flags

#: Every MemcachedStore of this process, so that a forked child can mark theirs (see _let_go).
_stores: weakref.WeakSet[MemcachedStore] = weakref.WeakSet()
#: Shown with a URL that names no server, or names one badly.
_EXAMPLE_URL = "memcached://127.0.0.1:11211 (a cluster: memcached://10.0.0.5:11211,10.0.0.6:11211)"


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
        self.ring = Ring(client)
        self.hashed = self.ring.hashed
        self._pool = getattr(client, "client_pool", None)
        #: A PooledClient's clients, checked out without its lock (see _node.Parked).
        self._parked = Parked()
        #: Set in a forked child: the sockets it inherited are its parent's (see _after_fork).
        self._inherited = False
        _stores.add(self)
        #: The size each key had when this process last appended to it or read it.
        self.sizes = Sizes()
        self.fast_send: MemcachedStore | None = self

    def __repr__(self) -> str:
        return f"MemcachedStore({', '.join(map(str, self.ring.servers()))})"

    @classmethod
    def from_url(cls, url: str) -> MemcachedStore:
        """Build from ``memcached://host:port[,host:port...][?timeout=S&max_value_size=N]``.

        One server gives a ``PooledClient``; several a pooling ``HashClient``. Every call has a
        timeout (default 3 seconds), so a hung server raises instead of blocking a request.
        """
        with requires("memcached"):
            from pymemcache.client.base import PooledClient
            from pymemcache.client.hash import HashClient

        parts = urlsplit(url)
        shown = masked_url(url)
        if parts.scheme != "memcached":
            raise ConfigurationError(f"not a memcached:// URL: {shown!r}")
        if not parts.netloc:
            raise ConfigurationError(
                f"{shown!r} names no server: a memcached:// URL needs host:port, e.g. "
                f"{_EXAMPLE_URL}"
            )
        if "@" in parts.netloc:
            raise ConfigurationError(f"a memcached:// URL takes no user or password: {shown!r}")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            timeout = float(query.pop("timeout", "3"))
            max_value_size = int(query.pop("max_value_size", str(DEFAULT_MAX_VALUE_SIZE)))
        except ValueError as error:
            raise ConfigurationError(f"bad option in {shown!r}: {error}") from error
        if query:
            raise ConfigurationError(f"unknown options in {shown!r}: {', '.join(sorted(query))}")
        servers = []
        for spec in parts.netloc.split(","):
            host, sep, port = spec.strip().rpartition(":")
            if not sep or not port.isdigit() or not host:
                raise ConfigurationError(
                    f"expected host:port, got {spec!r} in {shown!r}, e.g. {_EXAMPLE_URL}"
                )
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
        self._parked.close()

    def connection(self) -> Connection:
        """A connection that pins one socket per server until its ``with`` block ends."""
        if self._inherited:
            self._let_go()
        return Connection(self.ring, self.sizes, self.max_value_size, self._parked)

    def _let_go(self) -> None:
        """In a forked child, before its first call: drop the parent's sockets (closing the
        child's copies only; the parent's connections stay up) so that the two processes never
        talk over one connection, reading each other's replies. The next call reconnects."""
        self._inherited = False
        self.client.close()
        self._parked.close()

    def client_for(self, key: str) -> Any:
        """The node client for a key: the server a stranded copy's name says, else the key's
        hash-ring home."""
        return self.ring.client_for(key)

    def live_clients(self) -> list[Any]:
        """The node clients of the servers in the ring now."""
        return self.ring.live_clients()

    def append_one(self, key: str, value: bytes, counter: str | None) -> bool | None:
        """One send's append, in the fewest steps: ``append``, ``mg <key> s f`` and the
        ``counter`` bump pipelined on an already open socket, as
        :meth:`~._connection.Connection.append_many` does for a key it has seen, without its
        batching machinery.

        Returns None when it sent nothing and the general path must (a cluster, a key this
        process has not seen, a value the last seen size says would overflow, a socket not yet
        open); True when stored; False when the append was refused but the counter went out.
        """
        if self.hashed:
            return None
        if self._inherited:
            self._let_go()
        size = self.sizes.get(key)
        if size is None or size + len(value) > self.max_value_size:
            return None
        pool = self._pool
        if pool is None:
            client = self.client
        else:
            try:
                client = self._parked.pop()
            except IndexError:
                client = pool.get()
        sock = client.sock
        if sock is None:
            if pool is not None:
                pool.release(client)  # the general path opens it (a closed parked one: dropped)
            return None
        wire = client.key_prefix + key.encode("ascii")
        request = b"append %s 0 0 %d\r\n%s\r\nmg %s s f\r\n" % (wire, len(value), value, wire)
        if counter is None:
            lines = self._exchange_one(client, sock, request, 2)
        else:
            request += bump(client.key_prefix + counter.encode("ascii"), 1)
            lines = self._exchange_one(client, sock, request, 3)
        return self._settle_one(key, len(value), lines)

    def _exchange_one(
        self, client: Any, sock: socket.socket, request: bytes, replies: int
    ) -> list[bytes]:
        """The fast path's round trip on ``client``'s socket, which is parked after it (or
        closed and destroyed when it failed)."""
        try:
            sock.sendall(request)
            lines = _wire.read_lines(sock, replies)
            # The common answer first: stored, sized, counted.
            if not (lines[0] == b"STORED" and lines[-1] == b"HD") and any(map(is_refusal, lines)):
                raise ConnectionError(f"unexpected replies to an append: {lines!r}")
        except (OSError, ConnectionError) as error:
            client.close()
            if self._pool is not None:
                self._pool.destroy(client)
            raise StoreUnavailable(f"memcached at {client.server} failed: {error}") from error
        if self._pool is not None:
            self._parked.append(client)
        return lines

    def _settle_one(self, key: str, added: int, lines: list[bytes]) -> bool:
        """Note the key's new size from the fast path's replies, and move its frames to a
        segment when the append took it past a multiple of the segment size."""
        answer = lines[1]
        stored = lines[0] == b"STORED"
        if not stored:
            _wire.check_memory(lines[:1], (key,), {}, self.client.server)
        if answer.startswith(b"HD s"):
            here, spilled = size_flags(answer)
            dict.__setitem__(self.sizes, key, here + spilled)  # known key: no need to make room
            if here > segments.SEGMENT_BYTES and stored and segments.crossed(here, added):
                with self.connection() as conn:
                    conn.spill(key)
        else:
            self.sizes.pop(key, None)  # gone: the general path appends and adds
        return stored

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
"""

from __future__ import annotations

import socket
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..exceptions import ConfigurationError, StoreUnavailable
from . import DEFAULT_MAX_VALUE_SIZE

_READ_SIZE = 256 * 1024


class _Token:
    __slots__ = ("cas", "sock")

    def __init__(self, sock: socket.socket, cas: bytes) -> None:
        self.sock = sock
        self.cas = cas


class _Reader:
    """Buffered reads of lines and fixed-size blocks from one socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> None:
        chunk = self.sock.recv(_READ_SIZE)
        if not chunk:
            raise ConnectionError("memcached closed the connection")
        self.buf += chunk

    def line(self) -> bytes:
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[: end + 2]
                return line
            self._fill()

    def block(self, size: int) -> bytes:
        while len(self.buf) < size + 2:
            self._fill()
        data = bytes(self.buf[:size])
        del self.buf[: size + 2]
        return data


class _Node:
    """One server's connection, pinned for the life of a :class:`_Connection`."""

    def __init__(self, client: Any) -> None:
        self.pool = getattr(client, "client_pool", None)
        self.server = client.server
        self.client = self.pool.get() if self.pool is not None else client
        self.prefix: bytes = self.client.key_prefix or b""
        self.failed = False

    def release(self) -> None:
        if self.pool is not None:
            if self.failed:
                self.pool.destroy(self.client)
            else:
                self.pool.release(self.client)

    def socket(self) -> socket.socket:
        if self.client.sock is None:
            self.client._connect()  # pymemcache's own connect: timeouts, TLS, keepalive
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
            reader = _Reader(sock)
            lines = [reader.line() for _ in range(replies)]
        except (OSError, ConnectionError) as error:
            raise self.fail(error) from error
        for line in lines:
            if line.startswith((b"ERROR", b"CLIENT_ERROR")):
                self.failed = True
                self.client.close()
                raise StoreUnavailable(f"memcached at {self.server} refused a command: {line!r}")
        return lines

    def gets(self, keys: list[bytes]) -> dict[bytes, tuple[bytes, _Token]]:
        found: dict[bytes, tuple[bytes, _Token]] = {}
        try:
            sock = self.socket()
            sock.sendall(b"gets " + b" ".join(self.prefix + k for k in keys) + b"\r\n")
            reader = _Reader(sock)
            plen = len(self.prefix)
            while True:
                line = reader.line()
                if line == b"END":
                    return found
                parts = line.split()
                if len(parts) != 5 or parts[0] != b"VALUE":
                    raise ConnectionError(f"unexpected reply to gets: {line[:80]!r}")
                value = reader.block(int(parts[3]))
                found[parts[1][plen:]] = (value, _Token(sock, parts[4]))
        except (OSError, ConnectionError, ValueError) as error:
            raise self.fail(error) from error


class _Connection:
    """Groups each batch by server and sends it as one pipelined request per server."""

    def __init__(self, store: MemcachedStore) -> None:
        self.store = store
        self.nodes: dict[Any, _Node] = {}

    def close(self) -> None:
        for node in self.nodes.values():
            node.release()
        self.nodes.clear()

    def _node_for(self, key: str) -> _Node:
        client = self.store.client_for(key)
        node = self.nodes.get(client.server)
        if node is None:
            node = self.nodes[client.server] = _Node(client)
        return node

    def _group(self, keys: Iterator[str] | Sequence[str]) -> dict[_Node, list[str]]:
        groups: dict[_Node, list[str]] = defaultdict(list)
        for key in keys:
            groups[self._node_for(key)].append(key)
        return groups

    def gets_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, object]]:
        result: dict[str, tuple[bytes, object]] = {}
        for node, group in self._group(keys).items():
            for raw_key, item in node.gets([k.encode("ascii") for k in group]).items():
                result[raw_key.decode("ascii")] = item
        return result

    def _store(
        self,
        command: bytes,
        items: Mapping[str, bytes],
        expire: int,
        tokens: Mapping[str, object] | None = None,
    ) -> dict[str, bool]:
        result: dict[str, bool] = {}
        for node, group in self._group(iter(items)).items():
            parts: list[bytes] = []
            sent: list[str] = []
            sock = node.socket() if tokens is not None else None
            for key in group:
                value = items[key]
                cas = b""
                if tokens is not None:
                    token = tokens[key]
                    # A token from another socket may predate a restart: refuse, never compare.
                    if not isinstance(token, _Token) or token.sock is not sock:
                        result[key] = False
                        continue
                    cas = b" " + token.cas
                if len(value) > self.store.max_value_size:
                    result[key] = False
                    continue
                parts.append(
                    b"%s %s 0 %d %d%s\r\n%s\r\n"
                    % (command, node.prefix + key.encode("ascii"), expire, len(value), cas, value)
                )
                sent.append(key)
            if sent:
                replies = node.exchange(b"".join(parts), len(sent))
                for key, reply in zip(sent, replies, strict=True):
                    result[key] = reply == b"STORED"
        return result

    def cas_many(
        self, items: Mapping[str, tuple[bytes, object]], expire: int = 0
    ) -> dict[str, bool]:
        values = {key: value for key, (value, _) in items.items()}
        tokens = {key: token for key, (_, token) in items.items()}
        return self._store(b"cas", values, expire, tokens)

    def add_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        return self._store(b"add", items, expire)

    def set_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        return self._store(b"set", items, expire)

    def append_many(self, items: Mapping[str, bytes]) -> dict[str, bool]:
        return self._store(b"append", items, 0)

    def delete_many(self, keys: Sequence[str]) -> None:
        for node, group in self._group(keys).items():
            request = b"".join(b"delete %s\r\n" % (node.prefix + k.encode("ascii")) for k in group)
            node.exchange(request, len(group))


class MemcachedStore:
    """Pending payloads on memcached, through a ready pymemcache client.

    Pass a ``Client`` (one thread), a ``PooledClient`` (thread-safe) or a ``HashClient`` (a
    cluster; build it with ``use_pooling=True`` for threads). The client's serde is never used.
    ``max_value_size`` must not exceed the server's item limit (``-I``, 1 MiB by default).
    """

    supports_append = True
    shared = True

    def __init__(self, client: Any, *, max_value_size: int = DEFAULT_MAX_VALUE_SIZE) -> None:
        self.client = client
        self.max_value_size = max_value_size
        self._hashed = hasattr(client, "clients") and hasattr(client, "hasher")

    def __repr__(self) -> str:
        servers = sorted(self.client.clients) if self._hashed else [self.client.server]
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
        hashed = HashClient(servers, use_pooling=True, retry_attempts=1, dead_timeout=5, **options)
        return cls(hashed, max_value_size=max_value_size)

    def close(self) -> None:
        """Close every socket the client holds (they reopen on next use)."""
        self.client.close()

    @contextmanager
    def connection(self) -> Iterator[_Connection]:
        connection = _Connection(self)
        try:
            yield connection
        finally:
            connection.close()

    def client_for(self, key: str) -> Any:
        if not self._hashed:
            return self.client
        try:
            client = self.client._get_client(key)
        except Exception as error:  # pymemcache raises MemcacheError when every node is down
            raise StoreUnavailable(f"no memcached server for {key!r}: {error}") from error
        if client is None:
            raise StoreUnavailable(f"no memcached server for {key!r}: all servers are down")
        return client

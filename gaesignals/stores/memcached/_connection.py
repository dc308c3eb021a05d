"""The :class:`~gaesignals.stores.Connection` protocol on memcached: each batch grouped by
server (see :mod:`._ring`) and sent as one pipelined request per server (see :mod:`._node`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ...exceptions import PartialFailure, StoreUnavailable
from .. import Cached, is_stranded, segments, stranded_key
from ._node import SEGMENT_PIECE, Node, Parked, Unreachable
from ._ring import Operation, Ring
from ._sizes import Sizes
from ._wire import check_memory, quiet_bumps, where, wire_key
from ._writes import AppendWrite, CasWrite

logger = logging.getLogger("gaesignals")


class Connection:
    """Groups each batch by server and sends it as one pipelined request per server.

    :meth:`scan_many` names a copy found away from the key's home server by
    :func:`~gaesignals.stores.stranded_key` (the key and the server, a space never occurring
    in a memcached key); such a name is routed to that server, not hashed.
    """

    def __init__(
        self, ring: Ring, sizes: Sizes, max_value_size: int, parked: Parked | None = None
    ) -> None:
        self.ring = ring
        self.sizes = sizes
        self.max_value_size = max_value_size
        #: The single server's parked clients (see :class:`~._node.Parked`), shared with the
        #: store's send fast path.
        self.parked = parked
        self.nodes: dict[Any, Node] = {}

    def close(self) -> None:
        for node in self.nodes.values():
            node.release()
        self.nodes.clear()

    # A class, not @contextmanager: it is entered on every send, where a generator costs more
    # than the rest of the enter and exit (see BENCHMARKS.md).
    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _node(self, client: Any) -> Node:
        """The node pinned for ``client``'s server (a new one if it failed)."""
        node = self.nodes.get(client.server)
        if node is None or node.failed:
            if node is not None:
                node.release()
            piece = min(SEGMENT_PIECE, self.max_value_size)
            parked = self.parked if client is self.ring.client else None
            node = self.nodes[client.server] = Node(
                client, piece, parked, limit=segments.budget(self.max_value_size)
            )
        return node

    def _each_server(
        self, keys: Sequence[str], operation: Operation, result: Mapping[str, object] | None = None
    ) -> None:
        self.ring.each_server(keys, operation, self._node, result)

    def gets_many(self, keys: Sequence[str]) -> dict[str, Cached]:
        result: dict[str, Cached] = {}
        sizes = self.sizes

        def read(node: Node, group: list[str]) -> None:
            # Inline for keys at home (all but stranded copies): this runs per key per read.
            wires = [k.encode("ascii") if " " not in k else wire_key(k) for k in group]
            found = node.gets(wires)
            seen: dict[str, int] = {}
            for key, wire in zip(group, wires, strict=True):
                item = found.get(wire)
                if item is not None:
                    result[key] = item
                    if " " not in key:  # at home (see is_stranded), inline as above
                        seen[key] = len(item.value)
                else:
                    sizes.pop(key, None)
            sizes.note(seen)

        self._each_server(keys, read, result)
        return result

    def scan_many(self, keys: Sequence[str]) -> dict[str, Cached]:
        """Like :meth:`gets_many`, but on a cluster also read every other live server, where
        payloads sent while a key's home server was away are stranded. Non-empty copies found
        away from home come back named by :func:`~gaesignals.stores.stranded_key`."""
        if not self.ring.hashed:
            return self.gets_many(keys)
        result = self.gets_many(keys)
        home_servers = {key: self.ring.client_for(key).server for key in keys}
        wires = [wire_key(k) for k in keys]
        for client in self.ring.live_clients():
            if all(server == client.server for server in home_servers.values()):
                continue
            node = self._node(client)
            try:
                found = node.gets(wires)
            except (Unreachable, StoreUnavailable) as error:
                self.ring.server_failed(node.server)
                logger.warning("skipped %s while scanning: %s", node.server, error)
                continue
            location = where(client.server)
            for key, raw in zip(keys, wires, strict=True):
                item = found.get(raw)
                if item is not None and item.value and home_servers[key] != client.server:
                    result[stranded_key(key, location)] = item
        return result

    def _store(self, command: bytes, items: Mapping[str, bytes], expire: int) -> dict[str, bool]:
        """``add`` or ``set`` each item, pipelined per server."""
        result: dict[str, bool] = {}
        sizes = self.sizes
        limit = self.max_value_size

        def write(node: Node, group: list[str]) -> None:
            parts: list[bytes] = []
            sent: list[str] = []
            for key in group:
                value = items[key]
                if len(value) > limit:
                    result[key] = False
                    continue
                parts.append(
                    b"%s %s 0 %d %d\r\n%s\r\n"
                    % (command, node.prefix + wire_key(key), expire, len(value), value)
                )
                sent.append(key)
            if sent:
                replies = node.exchange(b"".join(parts), len(sent))
                for key, reply in zip(sent, replies, strict=True):
                    result[key] = reply == b"STORED"
                    if result[key] and not is_stranded(key):
                        sizes[key] = len(items[key])
                check_memory(replies, items, result, node.server)

        self._each_server(list(items), write, result)
        return result

    def cas_many(
        self,
        items: Mapping[str, Cached],
        expire: int = 0,
        counters: Mapping[str, int] | None = None,
    ) -> dict[str, bool]:
        """Compare-and-set each item, and bump ``counters``, in one quiet pipeline per server
        (see :class:`~._writes.CasWrite`): a reset of 100 keys with its counters comes back
        as one line."""
        result: dict[str, bool] = {}
        counts = {k: v for k, v in (counters or {}).items() if k not in items}
        if counts and self.ring.hashed:
            # Servers answer independently: the counters must land before any write does.
            try:
                self.incr_many(counts)
            except PartialFailure as error:  # nothing was written: not a partial write
                raise StoreUnavailable(str(error)) from error
            counts = {}
        sizes, limit = self.sizes, self.max_value_size

        def write(node: Node, group: list[str]) -> None:
            # One server (a cluster's counters went first): ahead of the writes, same pipeline.
            CasWrite(node, items, expire, result).run(group, counts, limit, sizes)

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
        not sent but reported False (:func:`~gaesignals.queue.append.append_frames` checks
        first, so its counters never go out for it); concurrent senders may take a queue past
        the limit by the payloads they append at once, never past ``-I``. An append is never
        taken back: rewriting a queue under a reliable deliverer's lock would break its
        acknowledgement."""
        result: dict[str, bool] = {}
        counts = {k: v for k, v in (counters or {}).items() if k not in items}
        write = AppendWrite(items, counts, self.sizes, self.max_value_size, result)
        self._each_server([*items, *counts], write, result)
        return {key: result.get(key, False) for key in items}

    def spill(self, key: str) -> None:
        """Move the frames of the queue at ``key`` to a segment, on its server (see
        :meth:`~._node.Node.spill`)."""
        try:
            self._each_server([key], lambda node, group: node.spill(group[0]))
        except StoreUnavailable as error:  # no server for it now: the queue only stays long
            logger.warning("could not move %s to a segment: %s", key, error)

    def incr_many(self, deltas: Mapping[str, int]) -> None:
        """Add each delta to a decimal counter, creating a missing one (meta arithmetic)."""

        def bump(node: Node, group: list[str]) -> None:
            node.exchange_quiet(quiet_bumps(node.prefix, {k: deltas[k] for k in group}))

        if deltas:
            self._each_server(list(deltas), bump)

    def delete_many(self, keys: Sequence[str]) -> None:
        def delete(node: Node, group: list[str]) -> None:
            request = b"".join(b"delete %s\r\n" % (node.prefix + wire_key(k)) for k in group)
            node.exchange(request, len(group))

        self._each_server(keys, delete)

"""Which server a key goes to, and what happens when one fails.

On a cluster (pymemcache's ``HashClient``) a key goes to its home on the hash ring, or to the
server a stranded copy's name says (:func:`~gaesignals.stores.stranded_key`). A
server that cannot be reached leaves the ring at once (pymemcache's own dead-node bookkeeping,
which brings it back after ``dead_timeout``), and a batch whose server refused the connection
is re-sent to its keys' new servers: nothing had been sent, so nothing can be applied twice.
This is the only module that reaches into ``HashClient``'s bookkeeping.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ...exceptions import PartialFailure, StoreUnavailable
from .. import home_key, is_stranded, stranded_at
from ._node import Node, Unreachable
from ._wire import where

#: One server's part of a batch: the node and the keys that go there.
Operation = Callable[[Node, list[str]], None]


class Ring:
    """The servers of one pymemcache client: a single one, or a ``HashClient``'s ring."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.hashed = hasattr(client, "clients") and hasattr(client, "hasher")

    def servers(self) -> list[Any]:
        """Every configured server, dead or alive."""
        return sorted(self.client.clients) if self.hashed else [self.client.server]

    def client_for(self, key: str) -> Any:
        """The node client for a key: the server a stranded copy's name says, else the key's
        hash-ring home."""
        if not self.hashed:
            return self.client
        base, location = home_key(key), stranded_at(key)
        if location:
            for client in self.client.clients.values():
                if where(client.server) == location:
                    return client
            raise StoreUnavailable(f"memcached at {location} is no longer configured")
        try:
            client = self.client._get_client(base)
        except Exception as error:  # pymemcache raises MemcacheError when every node is down
            raise StoreUnavailable(f"no memcached server for {base!r}: {error}") from error
        if client is None:
            raise StoreUnavailable(f"no memcached server for {base!r}: all servers are down")
        return client

    def live_clients(self) -> list[Any]:
        """The node clients of the servers in the ring now."""
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
        """How many times a batch is routed at most: once per server and retry, and once."""
        if not self.hashed:
            return 1
        attempts: int = max(self.client.retry_attempts, 0)
        return len(self.client.clients) * (attempts + 1) + 1

    def each_server(
        self,
        keys: Sequence[str],
        operation: Operation,
        node_for: Callable[[Any], Node],
        result: Mapping[str, object] | None = None,
    ) -> None:
        """Run ``operation`` once per server on its keys (``node_for`` gives a node client's
        pinned node); when a server is unreachable, drop it from the ring and run its
        keys (not stranded copies) again on their new servers.

        A server that took the request but failed to answer does not stop the others: their
        parts still run, then :class:`PartialFailure` carries ``result`` (the answers of the
        servers that did answer), so a caller never loses what it won elsewhere."""
        if not self.hashed:  # one server: no grouping, no rerouting
            try:
                operation(node_for(self.client), list(keys))
            except Unreachable as error:
                raise StoreUnavailable(str(error)) from error
            return
        pending = list(keys)
        failure: StoreUnavailable | None = None
        for _ in range(self.max_reroutes()):
            groups: dict[Node, list[str]] = defaultdict(list)
            for key in pending:
                groups[node_for(self.client_for(key))].append(key)
            pending = []
            for node, group in groups.items():
                try:
                    operation(node, group)
                except Unreachable:
                    self.server_failed(node.server)
                    pending.extend(k for k in group if not is_stranded(k))
                except StoreUnavailable as error:
                    # Sent but unanswered (a hang, a crash mid-reply): the batch may have been
                    # applied, so it is not re-sent; later calls go around the server.
                    self.server_failed(node.server)
                    failure = failure or error
            if not pending:
                break
        else:
            failure = failure or StoreUnavailable(
                "no reachable memcached server for " + ", ".join(pending[:5])
            )
        if failure is not None:
            raise PartialFailure(str(failure), dict(result or {})) from failure

"""Routing a batch of commands: one pipeline per server, and what happens when one fails.

A cluster's slot map and node clients are redis-py's (``RedisCluster``'s ``nodes_manager``,
``keyslot`` and ``get_redis_connection``); the batching is ours, because redis-py's cluster
pipeline cannot keep today's promise on a node failing mid-batch: on a connection error or a
timeout it re-sends the whole stack (retries) or raises, dropping the replies of the nodes that
did answer, so a weak delivery could neither keep the resets it won nor know which payloads
were taken. Here each node's part is one plain pipeline, the parts on other nodes still run,
and :class:`~gaesignals.exceptions.PartialFailure` carries every reply that came.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, NamedTuple

from ...exceptions import PartialFailure, StoreUnavailable
from ._scripts import SCRIPTS

#: How many times a batch follows MOVED/ASK redirections or reloads a script before giving up.
ROUNDS = 5

# A command is (key, args): the key routes it on a cluster.
Command = tuple[str, tuple[Any, ...]]


class Router:
    """Sends batches of commands to the servers of one redis-py client."""

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.name = name
        self.clustered = hasattr(client, "nodes_manager")
        self._refresh = False

    def __repr__(self) -> str:
        return self.name

    def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Run ``commands``, one pipeline per server, and return their replies in order.

        A script the server does not know (first use, a restart, ``SCRIPT FLUSH``) was not run:
        it is sent again with ``EVAL``, which also caches it. On a cluster, commands answered
        ``MOVED`` or ``ASK`` were not run either and go to the node named. Nothing else is ever
        re-sent: a command that timed out may still be applied.

        Every other error is ``StoreUnavailable``, at once on a single server. On a cluster, a
        node that fails (no answer in time, a lost connection) or a command answered with an
        error stops nothing else: the other nodes' commands still run and their redirections
        are followed (nothing more goes to a node that failed), then ``PartialFailure`` is
        raised, whose ``results`` map the key of every command that got a reply to that reply.
        """
        import redis
        from redis.exceptions import RedisClusterException

        errors = (redis.RedisError, RedisClusterException, StoreUnavailable)
        try:
            if self._refresh:
                self.client.nodes_manager.initialize()
                self._refresh = False
        except errors as error:  # nothing was sent
            raise StoreUnavailable(f"{self!r} failed: {error}") from error
        replies: list[Any] = [_NO_REPLY] * len(commands)
        todo = [Sent(position, args) for position, (_, args) in enumerate(commands)]
        failure: Exception | None = None
        down: set[str] = set()  # the nodes that failed during this call
        for _ in range(ROUNDS):
            # By node name: redis-py's ClusterNode was not hashable before 5.1.
            nodes: dict[str, Any] = {}
            groups: dict[str, list[Sent]] = defaultdict(list)
            for sent in todo:
                try:
                    node = sent.node or self._home(commands[sent.position][0])
                except errors as error:  # no node serves the slot: not sent
                    failure = self._failed(error, failure)
                    continue
                name = node if node is _SINGLE else node.name
                if name not in down:
                    nodes[name] = node
                    groups[name].append(sent)
            todo = []
            for name, group in groups.items():
                node = nodes[name]
                try:
                    answers = self._pipeline(node, group)
                except errors as error:
                    # Sent, maybe applied: never re-sent, and the node gets nothing more.
                    failure = self._failed(error, failure)
                    down.add(name)
                    continue
                for sent, answer in zip(group, answers, strict=True):
                    if _foreign_type(sent, answer):
                        answer = None  # read as absent
                    try:
                        again = self._again(sent, node, answer)
                    except errors as error:  # an error reply: this command alone failed
                        failure = self._failed(error, failure)
                        continue
                    if again is None:
                        replies[sent.position] = answer
                    else:
                        todo.append(again)
            if not todo:
                break
        else:
            redirected = StoreUnavailable(f"{self!r}: commands kept being redirected")
            failure = self._failed(redirected, failure)
        if failure is None:
            return replies
        results = {
            key: reply
            for (key, _), reply in zip(commands, replies, strict=True)
            if reply is not _NO_REPLY
        }
        raise PartialFailure(self._describe(failure), results) from failure

    def _failed(self, error: Exception, failure: Exception | None) -> Exception:
        """On a single server, raise ``error`` as ``StoreUnavailable`` at once; on a cluster,
        return the first failure of the call, for the ``PartialFailure`` raised at its end."""
        import redis

        if not self.clustered:
            if isinstance(error, StoreUnavailable):
                raise error
            raise StoreUnavailable(self._describe(error)) from error
        if isinstance(error, redis.ConnectionError | redis.TimeoutError):
            self._refresh = True  # a node may have failed over: reload the slot map first
        return failure or error

    def _describe(self, error: Exception) -> str:
        return str(error) if isinstance(error, StoreUnavailable) else f"{self!r} failed: {error}"

    def _pipeline(self, node: Any, group: list[Sent]) -> list[Any]:
        """Send ``group`` to ``node`` in one pipeline; one answer (or error) per command."""
        client = self.client if node is _SINGLE else self.client.get_redis_connection(node)
        pipe = client.pipeline(transaction=False)
        for sent in group:
            if sent.asking:
                pipe.execute_command("ASKING")
            pipe.execute_command(*sent.args)
        answers = iter(pipe.execute(raise_on_error=False))
        replies = []
        for sent in group:
            if sent.asking:
                next(answers)  # ASKING's own OK
            replies.append(next(answers))
        return replies

    def _again(self, sent: Sent, node: Any, answer: Any) -> Sent | None:
        """None if ``answer`` is the command's reply; else the command to send again, when it
        was not run (an unknown script, a redirection); else raise the error."""
        from redis.exceptions import AskError, MovedError, NoScriptError

        if not isinstance(answer, Exception):
            return None
        if isinstance(answer, NoScriptError):
            args = ("EVAL", SCRIPTS[sent.args[1]], *sent.args[2:])
            return sent._replace(args=args, node=node if sent.node is not None else None)
        if isinstance(answer, MovedError):
            manager = self.client.nodes_manager
            if hasattr(manager, "move_slot"):
                manager.move_slot(answer)
            else:  # redis-py before 6: reload the whole slot map
                manager.initialize()
            return sent._replace(node=None, asking=False)
        if isinstance(answer, AskError):
            return sent._replace(node=self._named(answer.host, answer.port), asking=True)
        raise answer

    def _home(self, key: str) -> Any:
        """The server that holds ``key``."""
        if not self.clustered:
            return _SINGLE
        return self.client.nodes_manager.get_node_from_slot(self.client.keyslot(key))

    def _named(self, host: str, port: int) -> Any:
        manager = self.client.nodes_manager
        node = manager.get_node(host=host, port=port)
        if node is None:
            manager.initialize()
            node = manager.get_node(host=host, port=port)
        if node is None:
            raise StoreUnavailable(f"{self!r}: cluster node {host}:{port} is unknown")
        return node


def _foreign_type(sent: Sent, answer: Any) -> bool:
    """Whether ``answer`` refuses a GET because the key holds another type: only strings are
    ever written, so such a key is someone else's and reads as absent, instead of failing the
    batch (and every signal in it) for as long as it stays."""
    return (
        sent.args[0] == "GET"
        and isinstance(answer, Exception)
        and str(answer).startswith("WRONGTYPE")
    )


#: The node of a single-server client.
_SINGLE = "single"
#: Where a command of a failed batch got no reply.
_NO_REPLY: Any = object()


class Sent(NamedTuple):
    """A command on its way: its place in the batch, its arguments, and where it must go
    (``None``: the key's home) with or without ``ASKING`` first."""

    position: int
    args: tuple[Any, ...]
    node: Any = None
    asking: bool = False

"""Redis and Valkey through redis-py: ``redis.Redis`` or ``redis.cluster.RedisCluster``.

Every batch is one pipeline per server (one write, one read), never a MULTI: each command is
atomic on its own, which is all delivery needs. What Redis does atomically is used as it is
(``SET NX EX`` for add and locks, ``SET`` for the cursor, ``DEL``); the calls Redis lacks are
short Lua scripts run with ``EVALSHA`` in the same pipeline:

* append: ``APPEND`` (which creates a missing key) only if the result fits ``max_value_size``
  (Redis's own limit is 512 MB), so a first send is one round trip too and its ``sent``
  counter never runs ahead of a refused append;
* compare-and-set: Redis has no CAS counter, so the token is the value read itself, and the
  script writes only if the key still holds a value with the same SHA-1 (``redis.sha1hex``);
* counters: a decimal add that stops at 0 and leaves a non-number alone (``INCRBY`` would go
  negative and refuses the trailing spaces a memcached counter may carry).

Why a value token cannot lose a payload (the ABA question): every caller computes the value it
writes from the value it read alone (the queue minus the frames it took, the same lock with a
fresh lease, a released lock). If the key holds byte-identical bytes at write time, the write
has exactly the effect it would have had right after a fresh read, so whatever happened in
between (a delivery, sends) left nothing that the write could wipe: every frame a sender added
since is in the current value, which would then differ. Frames carry random 8-byte ids, so a
queue can come back to identical bytes only by a replay of the very same frames (requeued dead
letters, or a hostile cache writer), and then the worst case is a payload delivered twice, never
one lost. Locks are values too: a lock holds its owner's random token, so "the same value" means
"the same owner", and a free lock (the empty value) taken over a stale read is still free. A
digest rather than the value itself keeps a CAS of a 1 MB queue from sending 1 MB back; SHA-1
collisions cannot be stumbled upon, and whoever can craft one can also just overwrite the key.

No client retries: a pipeline that timed out may have been applied, so re-sending it could
append a payload twice. On a single server a failure is
:class:`~gaesignals.exceptions.StoreUnavailable` at once; the next call reconnects. On a
cluster, keys are routed by hash slot with redis-py's slot map; ``MOVED`` and ``ASK`` answers
(commands that were not run) are followed, and a node failure refreshes the map before the next
call. A node that fails mid-batch does not stop the others: their parts still run, then
:class:`~gaesignals.exceptions.PartialFailure` carries what they answered, so a weak delivery
keeps the resets it won. A key has exactly one home in a Redis cluster, so there are no
stranded copies: ``scan_many`` is ``gets_many``.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from ..exceptions import ConfigurationError, PartialFailure, StoreUnavailable
from . import DEFAULT_MAX_VALUE_SIZE

logger = logging.getLogger("gaesignals")

#: How many times a batch follows MOVED/ASK redirections or reloads a script before giving up.
_ROUNDS = 5

# KEYS[1]; ARGV: sha1 hex of the value read, the new value, expiry in seconds (0: none).
_CAS = b"""
local current = redis.call('GET', KEYS[1])
if not current or redis.sha1hex(current) ~= ARGV[1] then return 0 end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
"""

# KEYS[1]; ARGV: the bytes to append, the largest value allowed. APPEND keeps the key's TTL.
_APPEND = b"""
if redis.call('STRLEN', KEYS[1]) + string.len(ARGV[1]) > tonumber(ARGV[2]) then return 0 end
redis.call('APPEND', KEYS[1], ARGV[1])
return 1
"""

# KEYS[1]; ARGV: the delta. A missing counter is created holding max(delta, 0); a negative
# delta stops at 0; a key holding anything but decimal digits (maybe then spaces) is left alone.
_INCR = b"""
local current = redis.call('GET', KEYS[1])
local delta = tonumber(ARGV[1])
if not current then
  redis.call('SET', KEYS[1], string.format('%d', math.max(delta, 0)))
  return 1
end
local digits = string.match(current, '^(%d+) *$')
if not digits then return 0 end
redis.call('SET', KEYS[1], string.format('%d', math.max(tonumber(digits) + delta, 0)), 'KEEPTTL')
return 1
"""

_SCRIPTS = {hashlib.sha1(script).hexdigest(): script for script in (_CAS, _APPEND, _INCR)}
_SHA = {script: sha for sha, script in _SCRIPTS.items()}

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class _Token:
    """The value a key held when read; its digest is what a CAS compares."""

    __slots__ = ("value",)

    def __init__(self, value: bytes) -> None:
        self.value = value

    def digest(self) -> str:
        return hashlib.sha1(self.value).hexdigest()


# A command is (key, args): the key routes it on a cluster.
_Command = tuple[str, tuple[Any, ...]]
# What a connection method answers, built from (key, reply) pairs.
_Answer = TypeVar("_Answer", bound=dict[str, Any])


class _Connection:
    """Sends each batch as one pipeline per server; tokens are values, valid anywhere."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store

    def __enter__(self) -> _Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    # -- the Connection protocol: one private helper per command family ------------------------

    def gets_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, object]]:
        return self._run([(key, ("GET", key)) for key in keys], _found)

    scan_many = gets_many  # a key has one home in a Redis cluster: nothing is ever stranded

    def cas_many(
        self,
        items: Mapping[str, tuple[bytes, object]],
        expire: int = 0,
        counters: Mapping[str, int] | None = None,
    ) -> dict[str, bool]:
        """Compare-and-set by value digest; ``counters`` are bumped first: in the same pipeline
        on one node (which runs it in order), in a round trip of their own on a cluster."""
        bumps = [_incr(k, delta) for k, delta in (counters or {}).items() if k not in items]
        if bumps and self.store.clustered:
            try:
                self.store.execute(bumps)
            except PartialFailure as error:  # nothing was written yet: not a partial write
                raise StoreUnavailable(str(error)) from error.__cause__
            bumps = []
        limit = self.store.max_value_size
        commands: dict[str, _Command] = {}
        for key, (value, token) in items.items():
            # Never grow a key past the limit; rewriting or shrinking one that is already over
            # it (written with a larger limit) stays possible, so it can still be drained.
            if isinstance(token, _Token) and (
                len(value) <= limit or len(value) <= len(token.value)
            ):
                commands[key] = (key, _script(_CAS, key, token.digest(), value, max(expire, 0)))
        return self._flags(items, commands, first=bumps)

    def add_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        return self._set(items, expire, ("NX",))

    def set_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        return self._set(items, expire, ())

    def append_many(
        self, items: Mapping[str, bytes], counters: Mapping[str, int] | None = None
    ) -> dict[str, bool]:
        """Append within ``max_value_size``, creating missing keys; ``counters`` (keys other than
        ``items``') are bumped as by :meth:`incr_many` in the same round trip, after the
        appends, whatever their outcome."""
        limit = self.store.max_value_size
        commands = {
            key: (key, _script(_APPEND, key, value, limit))
            for key, value in items.items()
            if len(value) <= limit
        }
        bumps = [_incr(k, delta) for k, delta in (counters or {}).items() if k not in items]
        return self._flags(items, commands, bumps)

    def incr_many(self, deltas: Mapping[str, int]) -> None:
        """Add each delta to a decimal counter (stopping at 0), creating a missing one."""
        self._run([_incr(key, delta) for key, delta in deltas.items()], _nothing)

    def delete_many(self, keys: Sequence[str]) -> None:
        self._run([(key, ("DEL", key)) for key in keys], _nothing)

    # -- helpers -------------------------------------------------------------------------------

    def _set(
        self, items: Mapping[str, bytes], expire: int, flags: tuple[str, ...]
    ) -> dict[str, bool]:
        ttl = ("EX", expire) if expire > 0 else ()
        commands = {
            key: (key, ("SET", key, value, *flags, *ttl))
            for key, value in items.items()
            if len(value) <= self.store.max_value_size
        }
        return self._flags(items, commands)

    def _flags(
        self,
        items: Mapping[str, object],
        commands: dict[str, _Command],
        then: Sequence[_Command] = (),
        first: Sequence[_Command] = (),
    ) -> dict[str, bool]:
        """Run ``commands`` (after ``first`` and before ``then``, whose replies are not wanted)
        and answer for every key of ``items``: False where no command was sent (refused before
        the server saw it) or where it answered nil or 0. A key whose node failed is left out
        of a :class:`PartialFailure`'s results: its command may or may not have been applied."""

        def flags(pairs: Iterable[tuple[str, Any]]) -> dict[str, bool]:
            # Counters' keys are never keys of ``items``, so their replies are never taken.
            replies = dict(pairs)
            return {
                key: bool(replies.get(key))
                for key in items
                if key in replies or key not in commands
            }

        return self._run([*first, *commands.values(), *then], flags)

    def _run(
        self,
        commands: Sequence[_Command],
        answer: Callable[[Iterable[tuple[str, Any]]], _Answer],
    ) -> _Answer:
        """Execute ``commands`` and build the method's answer from their (key, reply) pairs;
        when some nodes of a cluster failed, :class:`PartialFailure` carries the answer built
        from the replies that came, keyed as the method answers."""
        try:
            replies = self.store.execute(commands)
        except PartialFailure as error:
            raise PartialFailure(str(error), answer(error.results.items())) from error.__cause__
        return answer(zip((key for key, _ in commands), replies, strict=True))


def _found(pairs: Iterable[tuple[str, Any]]) -> dict[str, tuple[bytes, object]]:
    """``gets_many``'s answer: the keys that hold a value, with the value as its token."""
    return {key: (value, _Token(value)) for key, value in pairs if value is not None}


def _nothing(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """The answer of a call whose replies are not wanted (a partial failure carries none)."""
    return {}


def _script(script: bytes, key: str, *args: Any) -> tuple[Any, ...]:
    return ("EVALSHA", _SHA[script], 1, key, *args)


def _incr(key: str, delta: int) -> _Command:
    return (key, _script(_INCR, key, delta))


class RedisStore:
    """Pending payloads on Redis or Valkey, through a ready redis-py client.

    Pass a ``redis.Redis`` (thread-safe: it pools connections) or a
    ``redis.cluster.RedisCluster``, built with ``decode_responses=False`` and, to keep a timed
    out batch from being applied twice, no retries (``retry=Retry(NoBackoff(), 0)``, as
    :meth:`from_url` does). ``max_value_size`` bounds one signal's pending bytes.
    """

    supports_append = True
    shared = True
    sizes = None
    fast_send = None
    native = None

    def __init__(self, client: Any, *, max_value_size: int = DEFAULT_MAX_VALUE_SIZE) -> None:
        if client.get_encoder().decode_responses:
            raise ValueError("RedisStore needs a client built with decode_responses=False")
        self.client = client
        self.max_value_size = max_value_size
        self.clustered = hasattr(client, "nodes_manager")
        self._refresh = False
        # A cluster's node clients never retry; only a plain client can have been built to.
        retry = None if self.clustered else client.get_retry()
        # get_retries() is redis-py 6+; before, the count was only kept in _retries.
        retries = getattr(retry, "get_retries", lambda: getattr(retry, "_retries", 0))()
        if retries > 0:
            logger.warning(
                "gaesignals: this Redis client retries failed commands; a retried batch that "
                "timed out after the server applied it appends its payloads twice. Build it "
                "with retry=Retry(NoBackoff(), 0) (RedisStore.from_url does)."
            )

    def __repr__(self) -> str:
        if self.clustered:
            nodes = sorted(node.name for node in self.client.get_nodes())
            return f"RedisStore(cluster {', '.join(nodes)})"
        kwargs = self.client.get_connection_kwargs()
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        return f"RedisStore({where}/{kwargs.get('db', 0)})"

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        """Build from a Redis URL:

        * ``redis://[[user]:password@]host[:port][/db]`` (``rediss://`` for TLS),
        * ``unix://[[user]:password@]/path/to/socket[?db=N]``,
        * ``redis://host:port[,host:port...]?cluster=true`` (or ``rediss://``): a cluster,
          found from any of the nodes named.

        Options: ``timeout`` (seconds, default 3, for connecting and for every reply, so a hung
        server raises instead of blocking a request) and ``max_value_size`` (bytes). A single
        server is not contacted until first use; a cluster is asked for its slot map at once
        (``StoreUnavailable`` if no node answers).
        """
        import redis
        from redis.backoff import NoBackoff
        from redis.cluster import ClusterNode, RedisCluster
        from redis.exceptions import RedisClusterException
        from redis.retry import Retry

        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ConfigurationError(f"not a redis://, rediss:// or unix:// URL: {url!r}")
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            timeout = float(query.pop("timeout", "3"))
            max_value_size = int(query.pop("max_value_size", str(DEFAULT_MAX_VALUE_SIZE)))
            if "db" in query:
                int(query["db"])
        except ValueError as error:
            raise ConfigurationError(f"bad option in {url!r}: {error}") from error
        cluster = query.pop("cluster", "false").lower()
        if cluster not in _TRUE + _FALSE:
            raise ConfigurationError(f"cluster must be true or false in {url!r}")
        unknown = set(query) - {"db"}
        if unknown:
            raise ConfigurationError(f"unknown options in {url!r}: {', '.join(sorted(unknown))}")
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
        }
        if cluster in _FALSE:
            if "," in parts.netloc:
                raise ConfigurationError(f"several hosts need ?cluster=true: {url!r}")
            plain = url.partition("?")[0] + ("?" + urlencode(query) if query else "")
            try:
                client = redis.Redis.from_url(plain, **options)
            except ValueError as error:
                raise ConfigurationError(f"bad Redis URL {url!r}: {error}") from error
            return cls(client, max_value_size=max_value_size)
        if parts.scheme == "unix" or query or parts.path.strip("/") not in ("", "0"):
            raise ConfigurationError(f"a cluster has no unix sockets nor databases: {url!r}")
        credentials, _, hosts = parts.netloc.rpartition("@")
        username, _, password = credentials.partition(":")
        nodes: list[Any] = []
        for spec in hosts.split(","):
            host, sep, port = spec.strip().rpartition(":")
            if not sep or not port.isdigit() or not host:
                raise ConfigurationError(f"expected host:port, got {spec!r} in {url!r}")
            nodes.append(ClusterNode(host.strip("[]"), int(port)))  # type: ignore[no-untyped-call]
        try:
            cluster_client = RedisCluster(
                startup_nodes=nodes,
                username=unquote(username) or None,
                password=unquote(password) or None,
                ssl=parts.scheme == "rediss",
                **options,
            )
        except (redis.RedisError, RedisClusterException) as error:
            raise StoreUnavailable(f"no Redis cluster at {hosts}: {error}") from error
        return cls(cluster_client, max_value_size=max_value_size)

    def close(self) -> None:
        """Close every pooled connection (they reopen on next use)."""
        self.client.close()

    def connection(self) -> _Connection:
        return _Connection(self)

    # -- the only places that talk to redis-py ---------------------------------------------------

    def execute(self, commands: Sequence[_Command]) -> list[Any]:
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
        todo = [_Sent(position, args) for position, (_, args) in enumerate(commands)]
        failure: Exception | None = None
        down: set[str] = set()  # the nodes that failed during this call
        for _ in range(_ROUNDS):
            # By node name: redis-py's ClusterNode was not hashable before 5.1.
            nodes: dict[str, Any] = {}
            groups: dict[str, list[_Sent]] = defaultdict(list)
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

    def _pipeline(self, node: Any, group: list[_Sent]) -> list[Any]:
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

    def _again(self, sent: _Sent, node: Any, answer: Any) -> _Sent | None:
        """None if ``answer`` is the command's reply; else the command to send again, when it
        was not run (an unknown script, a redirection); else raise the error."""
        from redis.exceptions import AskError, MovedError, NoScriptError

        if not isinstance(answer, Exception):
            return None
        if isinstance(answer, NoScriptError):
            args = ("EVAL", _SCRIPTS[sent.args[1]], *sent.args[2:])
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


#: The node of a single-server client.
_SINGLE = "single"
#: Where a command of a failed batch got no reply.
_NO_REPLY: Any = object()


class _Sent(NamedTuple):
    """A command on its way: its place in the batch, its arguments, and where it must go
    (``None``: the key's home) with or without ``ASKING`` first."""

    position: int
    args: tuple[Any, ...]
    node: Any = None
    asking: bool = False

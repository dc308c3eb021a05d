"""Redis and Valkey through redis-py: ``redis.Redis`` or ``redis.cluster.RedisCluster``.

Every batch is one pipeline per server (one write, one read), never a MULTI: each command is
atomic on its own, which is all delivery needs (:mod:`._router`). The memcache primitives are
Redis commands and short Lua scripts (:mod:`._connection`, :mod:`._scripts`); the weak take and
the reliable acknowledgement are native (:mod:`._native`): any number of signals in one round
trip with no compare-and-set, and an acknowledgement that compares only the head it replaces.

No client retries: a pipeline that timed out may have been applied, so re-sending it could
append a payload twice. On a single server a failure is
:class:`~gaesignals.exceptions.StoreUnavailable` at once; the next call reconnects. On a
cluster, keys are routed by hash slot with redis-py's slot map; ``MOVED`` and ``ASK`` answers
(commands that were not run) are followed, and a node failure refreshes the map before the next
call. A node that fails mid-batch does not stop the others: their parts still run, then
:class:`~gaesignals.exceptions.PartialFailure` carries what they answered. A key has exactly one
home in a Redis cluster, so there are no stranded copies: ``scan_many`` is ``gets_many``.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from ..._extras import requires
from ...exceptions import ConfigurationError, StoreUnavailable
from .. import DEFAULT_MAX_VALUE_SIZE, masked_url
from ._connection import RedisConnection
from ._native import RedisQueue
from ._router import Router

logger = logging.getLogger("gaesignals")

#: The URL schemes :meth:`RedisStore.from_url` takes, each with the one redis-py knows it by:
#: Valkey speaks Redis's protocol, so a ``valkey://`` URL is a ``redis://`` one.
SCHEMES = {
    "redis": "redis",
    "rediss": "rediss",
    "valkey": "redis",
    "valkeys": "rediss",
    "unix": "unix",
}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


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
    #: What sends the batches (a subclass may count or delay them: a test seam).
    Router = Router

    def __init__(self, client: Any, *, max_value_size: int = DEFAULT_MAX_VALUE_SIZE) -> None:
        if client.get_encoder().decode_responses:
            raise ValueError("RedisStore needs a client built with decode_responses=False")
        self.client = client
        self.max_value_size = max_value_size
        self.clustered = hasattr(client, "nodes_manager")
        self.router = self.Router(client, repr(self))
        #: The native weak take and reliable acknowledgement.
        self.native = RedisQueue(self.router)
        # A cluster's node clients never retry; only a plain client can have been built to.
        retry = None if self.clustered else client.get_retry()
        # get_retries() is redis-py 6+; before, the count was only kept in _retries.
        retries = getattr(retry, "get_retries", lambda: getattr(retry, "_retries", 0))()
        if retries > 0:
            logger.warning(
                "this Redis client retries failed commands; a retried batch that "
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
        """Build from a Redis or Valkey URL:

        * ``redis://[[user]:password@]host[:port][/db]`` (``rediss://`` for TLS),
        * ``valkey://...`` and ``valkeys://...`` (TLS), the same for a Valkey server,
        * ``unix://[[user]:password@]/path/to/socket[?db=N]``,
        * ``redis://host:port[,host:port...]?cluster=true`` (or ``rediss://``, ``valkey://``,
          ``valkeys://``): a cluster, found from any of the nodes named.

        Options: ``timeout`` (seconds, default 3, for connecting and for every reply, so a hung
        server raises instead of blocking a request) and ``max_value_size`` (bytes). A single
        server is not contacted until first use; a cluster is asked for its slot map at once
        (``StoreUnavailable`` if no node answers). Errors show the URL with its password masked.
        """
        shown = masked_url(url)
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() not in SCHEMES:
            raise ConfigurationError(
                f"not a {', '.join(s + '://' for s in SCHEMES)} URL: {shown!r}"
            )
        url = SCHEMES[scheme.lower()] + "://" + rest  # what redis-py knows Valkey's schemes as
        with requires("redis"):
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        timeout, max_value_size, clustered = _options(query, shown)
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
        }
        if not clustered:
            if "," in parts.netloc:
                raise ConfigurationError(f"several hosts need ?cluster=true: {shown!r}")
            plain = url.partition("?")[0] + ("?" + urlencode(query) if query else "")
            try:
                client = redis.Redis.from_url(plain, **options)
            except ValueError as error:
                raise ConfigurationError(f"bad Redis URL {shown!r}: {error}") from error
            return cls(client, max_value_size=max_value_size)
        if parts.scheme == "unix" or query or parts.path.strip("/") not in ("", "0"):
            raise ConfigurationError(f"a cluster has no unix sockets nor databases: {shown!r}")
        return cls(
            _cluster(parts.netloc, parts.scheme, shown, options), max_value_size=max_value_size
        )

    def close(self) -> None:
        """Close every pooled connection (they reopen on next use)."""
        self.client.close()

    def connection(self) -> RedisConnection:
        return RedisConnection(self.router, self.max_value_size)


def _options(query: dict[str, str], shown: str) -> tuple[float, int, bool]:
    """Pop ``timeout``, ``max_value_size`` and ``cluster`` from a URL's query; only ``db`` may
    stay."""
    try:
        timeout = float(query.pop("timeout", "3"))
        max_value_size = int(query.pop("max_value_size", str(DEFAULT_MAX_VALUE_SIZE)))
        if "db" in query:
            int(query["db"])
    except ValueError as error:
        raise ConfigurationError(f"bad option in {shown!r}: {error}") from error
    cluster = query.pop("cluster", "false").lower()
    if cluster not in _TRUE + _FALSE:
        raise ConfigurationError(f"cluster must be true or false in {shown!r}")
    unknown = set(query) - {"db"}
    if unknown:
        raise ConfigurationError(f"unknown options in {shown!r}: {', '.join(sorted(unknown))}")
    return timeout, max_value_size, cluster in _TRUE


def _cluster(netloc: str, scheme: str, shown: str, options: dict[str, Any]) -> Any:
    """A ``RedisCluster`` found from the ``host:port`` nodes of a URL's ``netloc``."""
    import redis
    from redis.cluster import ClusterNode, RedisCluster
    from redis.exceptions import RedisClusterException

    credentials, _, hosts = netloc.rpartition("@")
    username, _, password = credentials.partition(":")
    nodes: list[Any] = []
    for spec in hosts.split(","):
        host, sep, port = spec.strip().rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ConfigurationError(f"expected host:port, got {spec!r} in {shown!r}")
        nodes.append(ClusterNode(host.strip("[]"), int(port)))  # type: ignore[no-untyped-call]
    try:
        return RedisCluster(
            startup_nodes=nodes,
            username=unquote(username) or None,
            password=unquote(password) or None,
            ssl=scheme == "rediss",
            **options,
        )
    except (redis.RedisError, RedisClusterException) as error:
        raise StoreUnavailable(f"no Redis cluster at {hosts}: {error}") from error


__all__ = ["RedisStore"]

"""Helpers for testing code that sends and delivers signals.

``MemcachedServer`` and ``RedisServer`` run a real memcached or redis-server on a free loopback
port for the length of a test or a session (``RedisClusterServers``: a Redis cluster);
``CountingStore`` wraps any store and counts the batched calls (round trips) made through it.
``captured_signals()`` records what was sent; ``eager_signals(mapping)`` delivers at send time.
Both work by putting a wrapper in front of the configured store, so they see sends from any
code path and any thread. The pytest fixtures are in
:mod:`gaesignals.pytest_plugin`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, NamedTuple, Self, TypeVar

from . import config, frames
from .codec import decode
from .config import Settings, get_settings
from .keys import base_queue_key, signal_keys
from .mapping import MappingArg, SignalMapping
from .stores import Connection, Store

logger = logging.getLogger("gaesignals")

_V = TypeVar("_V")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _ServerProcess:
    """A server process on 127.0.0.1, started and stopped by the test that owns it.

    Subclasses give the command line (:meth:`_command`), a health check (:meth:`_answers`) and
    ``flush()``. ``restart()`` keeps the port (clients reconnect to a server with no items);
    ``stop()`` and ``start()`` simulate an outage.
    """

    name = "server"
    package = "server"

    def __init__(self, port: int | None = None, *, binary: str | None = None) -> None:
        found = binary or shutil.which(self.name)
        if found is None:
            raise FileNotFoundError(
                f"{self.name} is not installed (apt-get install -y {self.package})"
            )
        self.binary = found
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _answers(self, sock: socket.socket) -> bool:
        raise NotImplementedError

    def _startup_error(self) -> str:
        assert self.process is not None
        return self.process.stderr.read().decode().strip() if self.process.stderr else ""

    def start(self, timeout: float = 10.0) -> Self:
        self.process = subprocess.Popen(
            self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start: {self._startup_error()}")
            try:
                with socket.create_connection(self.address, timeout=0.5) as sock:
                    if self._answers(sock):
                        return self
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer on port {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            if self.process.stderr:
                self.process.stderr.close()
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def _request(self, request: bytes, expect: bytes, timeout: float = 2.0) -> bytes:
        """Send ``request`` on a fresh connection and read until ``expect`` is in the reply."""
        with socket.create_connection(self.address, timeout=timeout) as sock:
            sock.sendall(request)
            reply = b""
            while expect not in reply:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        return reply

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class MemcachedServer(_ServerProcess):
    """A memcached process on 127.0.0.1, started and stopped by the test that owns it.

    ``restart()`` keeps the port (clients reconnect to a server with no items and a fresh CAS
    counter); ``stop()`` and ``start()`` simulate an outage.
    """

    name = package = "memcached"

    def __init__(
        self,
        port: int | None = None,
        *,
        memory_mb: int = 64,
        threads: int = 2,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(port, binary=binary)
        self.memory_mb = memory_mb
        self.threads = threads
        self.extra_args = list(extra_args)

    @property
    def url(self) -> str:
        return f"memcached://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        command = [self.binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0"]
        command += ["-m", str(self.memory_mb), "-t", str(self.threads), *self.extra_args]
        if os.geteuid() == 0:
            command += ["-u", "root"]  # memcached refuses to run as root without it
        return command

    def _answers(self, sock: socket.socket) -> bool:
        sock.sendall(b"version\r\n")
        return sock.recv(64).startswith(b"VERSION")

    def flush(self) -> None:
        """Forget every item (``flush_all``)."""
        if not self._request(b"flush_all\r\n", b"\r\n").startswith(b"OK"):
            raise RuntimeError("flush_all failed")

    def stats(self) -> dict[str, str]:
        """The server's ``stats`` (``evictions``, ``curr_items``, ...), as strings."""
        data = self._request(b"stats\r\n", b"END\r\n")
        if not data.endswith(b"END\r\n"):
            raise RuntimeError("memcached closed the connection during stats")
        lines = data.decode().splitlines()
        return {p[1]: p[2] for p in (line.split(" ", 2) for line in lines) if p[0] == "STAT"}


class RedisServer(_ServerProcess):
    """A redis-server on 127.0.0.1 with no persistence, started and stopped by its test.

    ``cluster=True`` starts it as a cluster node (``--cluster-enabled yes``); see
    :class:`RedisClusterServers` for a whole cluster.
    """

    name = "redis-server"
    package = "redis-server"

    def __init__(
        self, port: int | None = None, *, cluster: bool = False, binary: str | None = None
    ) -> None:
        super().__init__(port, binary=binary)
        self.cluster = cluster
        self.workdir: str | None = None
        self.bus_port: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}" + ("?cluster=true" if self.cluster else "")

    def _command(self) -> list[str]:
        if self.workdir is None:  # kept across restarts: a cluster node keeps its nodes.conf
            self.workdir = tempfile.mkdtemp(prefix=f"gaesignals-redis-{self.port}-")
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", self.workdir]
        command += ["--logfile", os.path.join(self.workdir, "redis.log")]
        if self.cluster:
            if self.bus_port is None:  # the default, port + 10000, may be taken or too high
                self.bus_port = free_port()
            command += ["--cluster-enabled", "yes", "--cluster-port", str(self.bus_port)]
            command += ["--cluster-node-timeout", "5000"]
        return command

    def _startup_error(self) -> str:
        assert self.workdir is not None
        try:
            with open(os.path.join(self.workdir, "redis.log")) as log:
                return "".join(log.readlines()[-5:]).strip()
        except OSError:
            return super()._startup_error()

    def _answers(self, sock: socket.socket) -> bool:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")

    def command(self, *args: str) -> bytes:
        """Run one command (no spaces in its arguments) and return its raw reply."""
        return self._request(" ".join(args).encode() + b"\r\n", b"\r\n")

    def flush(self) -> None:
        """Forget every key (``FLUSHALL``)."""
        if not self.command("FLUSHALL").startswith(b"+OK"):
            raise RuntimeError("FLUSHALL failed")

    def remove(self) -> None:
        """Stop the server and delete its working directory."""
        self.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()


class RedisClusterServers:
    """A Redis cluster of ``size`` primaries (no replicas) on free 127.0.0.1 ports.

    ``start()`` starts the nodes, joins them with ``redis-cli --cluster create`` and waits until
    every node reports ``cluster_state:ok``.
    """

    def __init__(self, size: int = 3) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise FileNotFoundError("redis-cli is not installed (apt-get install -y redis-server)")
        self.cli = cli
        self.nodes = [RedisServer(cluster=True) for _ in range(size)]

    @property
    def url(self) -> str:
        return "redis://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes) + "?cluster=true"

    def start(self, timeout: float = 30.0) -> RedisClusterServers:
        deadline = time.monotonic() + timeout
        try:
            for node in self.nodes:
                node.start()
            create = [self.cli, "--cluster", "create"]
            create += [f"127.0.0.1:{node.port}" for node in self.nodes]
            create += ["--cluster-replicas", "0", "--cluster-yes"]
            subprocess.run(create, check=True, capture_output=True, timeout=timeout)
            while not all(b"cluster_state:ok" in n.command("CLUSTER", "INFO") for n in self.nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the Redis cluster was not ok within {timeout}s")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def flush(self) -> None:
        for node in self.nodes:
            node.flush()

    def stop(self) -> None:
        for node in self.nodes:
            node.remove()

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _CountingConnection:
    def __init__(self, inner: Connection, calls: Counter[str]) -> None:
        self._inner = inner
        self._calls = calls

    def gets_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, object]]:
        self._calls["gets_many"] += 1
        return self._inner.gets_many(keys)

    def scan_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, object]]:
        self._calls["scan_many"] += 1
        return self._inner.scan_many(keys)

    def cas_many(
        self,
        items: Mapping[str, tuple[bytes, object]],
        expire: int = 0,
        counters: Mapping[str, int] | None = None,
    ) -> dict[str, bool]:
        self._calls["cas_many"] += 1
        return self._inner.cas_many(items, expire, counters)

    def add_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        self._calls["add_many"] += 1
        return self._inner.add_many(items, expire)

    def set_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        self._calls["set_many"] += 1
        return self._inner.set_many(items, expire)

    def append_many(
        self, items: Mapping[str, bytes], counters: Mapping[str, int] | None = None
    ) -> dict[str, bool]:
        self._calls["append_many"] += 1
        return self._inner.append_many(items, counters)

    def incr_many(self, deltas: Mapping[str, int]) -> None:
        self._calls["incr_many"] += 1
        self._inner.incr_many(deltas)

    def delete_many(self, keys: Sequence[str]) -> None:
        self._calls["delete_many"] += 1
        self._inner.delete_many(keys)


class CountingStore:
    """Wraps a store and counts its batched calls by name in ``calls``."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.max_value_size = inner.max_value_size
        self.supports_append = inner.supports_append
        self.shared = inner.shared
        self.sizes = inner.sizes
        self.native = inner.native
        self.calls: Counter[str] = Counter()
        # A store's one-send fast path (see MemcachedStore.append_one), counted when it sent.
        self._fast = inner.fast_send
        self.fast_send = None if self._fast is None else self

    def append_one(self, key: str, value: bytes, counter: str | None) -> bool | None:
        assert self._fast is not None
        stored = self._fast.append_one(key, value, counter)
        if stored is not None:  # None: it sent nothing, the general path runs
            self.calls["append_one"] += 1
        return stored

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        with self.inner.connection() as conn:
            yield _CountingConnection(conn, self.calls)


# -- seeing and short-circuiting sends ------------------------------------------------------------


class Sent(NamedTuple):
    """One payload a send stored (or an eager send delivered): the signal's name and its data.

    A name that cannot appear in a cache key as it is (spaces, non-ASCII, very long) is stored
    under its hash and shows here as that key; :meth:`CapturedSignals.data` still finds it.
    """

    name: str
    data: Any


class CapturedSignals(list[Sent]):
    """The payloads sent while a :func:`captured_signals` block ran, in send order.

    It is a list of :class:`Sent` ``(name, data)`` pairs, so ``assert sent == [("a", 1)]``
    works; :meth:`data` and :meth:`names` answer the usual questions more briefly.
    """

    def __init__(self, namespace: str) -> None:
        super().__init__()
        self._namespace = namespace
        self._keys: list[str] = []

    def _record(self, key: str, name: str, data: Any) -> None:
        self._keys.append(key)
        self.append(Sent(name, data))

    def data(self, name: str) -> list[Any]:
        """The payloads sent to ``name``, oldest first (hashed names included)."""
        key = signal_keys(name, self._namespace).queue
        return [sent.data for k, sent in zip(self._keys, self, strict=True) if k == key]

    def names(self) -> list[str]:
        """The names signalled, each once, in order of first send."""
        return list(dict.fromkeys(sent.name for sent in self))

    def clear(self) -> None:
        super().clear()
        self._keys.clear()


class _Tap:
    """What an intercepting store does with the payloads written to signal queues.

    ``consumes(key)`` says whether a queue's new payloads are kept from the real store (the
    send reports them stored all the same); ``sent(key, chunk)`` is called once per stored or
    consumed chunk of frames, after the write succeeded, so a retried send is seen once.
    Recording taps hear of a chunk before delivering ones (``delivers``), so a capture lists a
    payload before whatever its eager handler sent in turn.
    """

    delivers = False

    def consumes(self, key: str) -> bool:
        raise NotImplementedError

    def sent(self, key: str, chunk: bytes) -> None:
        raise NotImplementedError


def _is_queue_key(key: str) -> bool:
    return base_queue_key(key) is not None  # any shard's


class _TappedConnection:
    """Passes every call through, except new payloads on queue keys, which go to the taps.

    Sends on stores with append use ``append_many`` then ``add_many``; on stores without it,
    ``gets_many`` then ``cas_many`` with the old value plus the new frames. A CAS that extends
    exactly what this connection read is a send; deliveries only ever shrink a queue.
    """

    def __init__(self, inner: Connection, taps: Sequence[_Tap]) -> None:
        self._inner = inner
        self._taps = sorted(taps, key=lambda tap: tap.delivers)
        self._read: dict[str, bytes] = {}
        self._consumed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)  # calls added to the protocol later pass through

    def _remember(
        self, keys: Sequence[str], found: dict[str, tuple[bytes, object]]
    ) -> dict[str, tuple[bytes, object]]:
        for key in keys:
            if key in found:
                self._read[key] = found[key][0]
            else:
                self._read.pop(key, None)
        return found

    def gets_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, object]]:
        return self._remember(keys, self._inner.gets_many(keys))

    def scan_many(self, keys: Sequence[str]) -> dict[str, tuple[bytes, object]]:
        return self._remember(keys, self._inner.scan_many(keys))

    def _write(
        self,
        items: Mapping[str, _V],
        chunk_of: Callable[[str, _V], bytes | None],
        write: Callable[[dict[str, _V]], dict[str, bool]],
    ) -> dict[str, bool]:
        chunks: dict[str, bytes] = {}
        passed: dict[str, _V] = {}
        result: dict[str, bool] = {}
        for key, item in items.items():
            chunk = chunk_of(key, item) if _is_queue_key(key) else None
            if chunk is not None:
                chunks[key] = chunk
                if any(tap.consumes(key) for tap in self._taps):
                    result[key] = True
                    self._consumed = True
                    continue
            passed[key] = item
        if passed:
            result.update(write(passed))
        for key, chunk in chunks.items():
            if result[key]:
                for tap in self._taps:
                    tap.sent(key, chunk)
        return {key: result[key] for key in items}

    def cas_many(
        self,
        items: Mapping[str, tuple[bytes, object]],
        expire: int = 0,
        counters: Mapping[str, int] | None = None,
    ) -> dict[str, bool]:
        def chunk_of(key: str, item: tuple[bytes, object]) -> bytes | None:
            old = self._read.get(key)
            value = item[0]
            if old is not None and len(value) > len(old) and value.startswith(old):
                return value[len(old) :]
            return None

        return self._write(
            items, chunk_of, lambda passed: self._inner.cas_many(passed, expire, counters)
        )

    def add_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        return self._write(
            items, lambda key, value: value, lambda passed: self._inner.add_many(passed, expire)
        )

    def set_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        return self._inner.set_many(items, expire)  # sends never set; delivery's cursor does

    def append_many(
        self, items: Mapping[str, bytes], counters: Mapping[str, int] | None = None
    ) -> dict[str, bool]:
        def write(passed: dict[str, bytes]) -> dict[str, bool]:
            # Payloads a tap consumed never reach the store, so neither do that call's
            # counters (a send counted but never stored would read as lost).
            whole = len(passed) == len(items)
            return self._inner.append_many(passed, counters if whole else None)

        return self._write(items, lambda key, value: value, write)

    def incr_many(self, deltas: Mapping[str, int]) -> None:
        if not self._consumed:  # a send's counts, after a tap kept its payloads from the store
            self._inner.incr_many(deltas)

    def delete_many(self, keys: Sequence[str]) -> None:
        self._inner.delete_many(keys)


class _TappedStore:
    """A store that shows its taps the payloads sent through it; everything else passes.

    Nested captures and eager blocks share one such store, each adding its tap, so every tap
    sees every send whatever the nesting order.
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.taps: list[_Tap] = []
        self.max_value_size = inner.max_value_size
        self.supports_append = inner.supports_append
        self.shared = inner.shared
        self.sizes = inner.sizes
        self.fast_send = None  # every send passes the taps
        self.native = inner.native

    def __repr__(self) -> str:
        return f"TappedStore({self.inner!r})"

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        with self.inner.connection() as conn:
            yield _TappedConnection(conn, list(self.taps))


def _payloads(key: str, chunk: bytes, settings: Settings) -> list[Any]:
    parsed, _ = frames.parse(chunk, key.encode(), settings.secret_keys)
    return [decode(frame, settings) for frame in parsed]


def _name_of(key: str) -> str:
    """The signal name in a queue key, or the key itself when the name was hashed into it."""
    _, _, kind, rest = key.split(":", 3)
    return rest[1:-1] if kind == "q" else key


@contextmanager
def _tapped(tap: _Tap) -> Iterator[None]:
    """Show ``tap`` every payload sent through the configured store, for the block's length."""
    current = get_settings()
    if isinstance(current.store, _TappedStore):
        current.store.taps.append(tap)
        try:
            yield
        finally:
            current.store.taps.remove(tap)
        return
    store = _TappedStore(current.store)
    store.taps.append(tap)
    tapped = dataclasses.replace(current, store=store)
    with config._lock:
        config._settings = tapped
    try:
        yield
    finally:
        with config._lock:
            if config._settings is tapped:  # unless the block configured something else
                config._settings = current


class _Capture(_Tap):
    def __init__(self, settings: Settings, sent: CapturedSignals, keep: bool) -> None:
        self.settings = settings
        self.captured = sent
        self.keep = keep
        self.lock = threading.Lock()

    def consumes(self, key: str) -> bool:
        return not self.keep

    def sent(self, key: str, chunk: bytes) -> None:
        base = base_queue_key(key) or key  # a shard's payloads are the signal's
        name = _name_of(base)
        with self.lock:
            for data in _payloads(base, chunk, self.settings):
                self.captured._record(base, name, data)


@contextmanager
def captured_signals(*, keep: bool = True) -> Iterator[CapturedSignals]:
    """Record every payload sent inside the block, from any thread, in send order::

        with captured_signals() as sent:
            app.post("/send", {"text": "hi"})
        assert sent.data("guestbook") == ["hi"]

    The payloads still reach the store for a later :func:`~gaesignals.deliver`; with
    ``keep=False`` they are recorded and dropped, so nothing is left pending.
    """
    settings = get_settings()
    sent = CapturedSignals(settings.namespace)
    with _tapped(_Capture(settings, sent, keep)):
        yield sent


class _Eager(_Tap):
    delivers = True

    def __init__(self, settings: Settings, mapping: SignalMapping, raise_errors: bool) -> None:
        self.settings = settings
        self.mapping = mapping
        self.raise_errors = raise_errors
        self.names = {signal_keys(name, settings.namespace).queue: name for name in mapping}
        self.delivered = CapturedSignals(settings.namespace)
        self.lock = threading.Lock()

    def consumes(self, key: str) -> bool:
        return base_queue_key(key) in self.names

    def sent(self, key: str, chunk: bytes) -> None:
        base = base_queue_key(key) or key
        name = self.names.get(base)
        if name is None:
            return
        for data in _payloads(base, chunk, self.settings):
            for handler in self.mapping.handlers(name):
                try:
                    if getattr(handler, "__gaesignals_pass_name__", False):
                        handler(data, signal_name=name)
                    else:
                        handler(data)
                except Exception:
                    if self.raise_errors:
                        raise
                    logger.exception("gaesignals: handler %r for signal %r failed", handler, name)
            with self.lock:
                self.delivered._record(key, name, data)


@contextmanager
def eager_signals(
    mapping: MappingArg,
    *,
    raise_errors: bool = True,
) -> Iterator[CapturedSignals]:
    """Inside the block, a send to a signal in ``mapping`` runs its handlers at once instead of
    storing the payload: for tests that check what a handler does, not when it runs.

    Signals outside ``mapping`` are stored as usual. A handler's exception propagates out of
    ``send`` unless ``raise_errors=False`` (then it is logged, as :func:`~gaesignals.deliver`
    does). Yields the payloads delivered this way.
    """
    tap = _Eager(get_settings(), SignalMapping.coerce(mapping), raise_errors)
    with _tapped(tap):
        yield tap.delivered

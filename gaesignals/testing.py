"""Helpers for testing code that sends and delivers signals.

``MemcachedServer`` runs a real memcached on a free loopback port for the length of a test or a
session; ``CountingStore`` wraps any store and counts the batched calls (round trips) made
through it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType

from .stores import Connection, Store


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MemcachedServer:
    """A memcached process on 127.0.0.1, started and stopped by the test that owns it.

    ``restart()`` keeps the port (clients reconnect to a server with no items and a fresh CAS
    counter); ``stop()`` and ``start()`` simulate an outage.
    """

    def __init__(
        self, port: int | None = None, *, memory_mb: int = 64, binary: str | None = None
    ) -> None:
        found = binary or shutil.which("memcached")
        if found is None:
            raise FileNotFoundError("memcached is not installed (apt-get install -y memcached)")
        self.binary = found
        self.port = port or free_port()
        self.memory_mb = memory_mb
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"memcached://127.0.0.1:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self, timeout: float = 10.0) -> MemcachedServer:
        command = [self.binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0"]
        command += ["-m", str(self.memory_mb), "-t", "2"]
        if os.geteuid() == 0:
            command += ["-u", "root"]  # memcached refuses to run as root without it
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"memcached exited at start: {err.strip()}")
            try:
                with socket.create_connection(self.address, timeout=0.5) as sock:
                    sock.sendall(b"version\r\n")
                    if sock.recv(64).startswith(b"VERSION"):
                        return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"memcached did not answer on port {self.port} within {timeout}s")

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

    def flush(self) -> None:
        """Forget every item (``flush_all``)."""
        with socket.create_connection(self.address, timeout=2) as sock:
            sock.sendall(b"flush_all\r\n")
            if not sock.recv(64).startswith(b"OK"):
                raise RuntimeError("flush_all failed")

    def __enter__(self) -> MemcachedServer:
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
        self, items: Mapping[str, tuple[bytes, object]], expire: int = 0
    ) -> dict[str, bool]:
        self._calls["cas_many"] += 1
        return self._inner.cas_many(items, expire)

    def add_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        self._calls["add_many"] += 1
        return self._inner.add_many(items, expire)

    def set_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        self._calls["set_many"] += 1
        return self._inner.set_many(items, expire)

    def append_many(self, items: Mapping[str, bytes]) -> dict[str, bool]:
        self._calls["append_many"] += 1
        return self._inner.append_many(items)

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
        self.calls: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        with self.inner.connection() as conn:
            yield _CountingConnection(conn, self.calls)

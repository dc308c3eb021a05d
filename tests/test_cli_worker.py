"""The ``gaesignals worker`` loop and the exit codes, as real ``python -m gaesignals``
processes: signals stop it after the current delivery, outages are retried."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gaesignals import deliver, send
from gaesignals.cli import main
from gaesignals.testing import MemcachedServer, free_port

from . import cli_support as support
from .cli_support import SECRET, Process

app = support.app
memcached_url = support.memcached_url
process = support.process


def _total(line: str) -> int:
    found = re.search(r"; (\d+) in total$", line)
    return int(found.group(1)) if found else -1


def test_worker_delivers_until_sigterm(
    app: Path,
    process: Callable[..., Process],
    memcached_url: str,
) -> None:
    """The worker delivers what is sent while it runs, says so line by line with a running
    total, and on SIGTERM prints a summary and exits 0."""
    log = app / "delivered.log"
    worker = process(
        "--store", memcached_url, "worker", "cliapp:mapping", "--interval", "0.05",
        CLIAPP_LOG=str(log),
    )  # fmt: skip
    worker.wait_for("out", lambda line: "worker: delivering 2 signal(s) (a, b)" in line)
    for n in range(3):
        send("a", n)
    send("b", "x")
    send("b", "y")
    worker.wait_for("out", lambda line: _total(line) == 5)
    worker.popen.send_signal(signal.SIGTERM)
    assert worker.finish() == 0
    summary = worker.lines["out"][-1]
    assert "worker stopped by SIGTERM: delivered 5 payload(s) (a=3, b=2)" in summary
    assert "0 store outage(s)" in summary
    assert sorted(log.read_text().splitlines()) == ['"x"', '"y"', "0", "1", "2"]
    assert deliver({"a": print, "b": print}) == 0


def test_worker_finishes_the_current_delivery_on_sigterm(
    app: Path,
    process: Callable[..., Process],
    memcached_url: str,
) -> None:
    """SIGTERM during a delivery lets the running handler finish before the worker exits."""
    log = app / "delivered.log"
    worker = process(
        "--store", memcached_url, "worker", "cliapp:slow_mapping", "--interval", "0.05",
        "--reliable", CLIAPP_LOG=str(log),
    )  # fmt: skip
    send("slow", "payload")
    deadline = time.monotonic() + 20
    while not (app / "started").exists():
        assert time.monotonic() < deadline and worker.popen.poll() is None, worker.lines
        time.sleep(0.01)
    worker.popen.send_signal(signal.SIGTERM)
    (app / "go").touch()
    assert worker.finish() == 0
    assert "delivered 1 payload(s) (slow=1)" in worker.lines["out"][-1]
    assert log.read_text() == '"payload"\n'
    assert deliver({"slow": print}, reliable=True) == 0  # acknowledged: not delivered again


def test_worker_survives_a_store_that_is_down_at_start(
    app: Path, process: Callable[..., Process], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the store down the worker reports it and retries with a growing pause; once the
    store is up it delivers, and SIGINT stops it with exit 0."""
    port = free_port()
    url = f"memcached://127.0.0.1:{port}"
    worker = process("worker", "cliapp:mapping", "--interval", "0.05", "--max-backoff", "0.2",
                     GAESIGNALS_STORE=url)  # fmt: skip
    worker.wait_for("err", lambda line: "store unavailable: memcached at" in line)
    worker.wait_for("err", lambda line: "retrying in 0.2s" in line)
    assert worker.popen.poll() is None
    with MemcachedServer(port=port):
        monkeypatch.setenv("GAESIGNALS_SECRET_KEY", SECRET)
        assert main(["--store", url, "send", "a", "--data", "1"]) == 0
        worker.wait_for("err", lambda line: "store reachable again" in line)
        worker.wait_for("out", lambda line: _total(line) == 1)
        worker.popen.send_signal(signal.SIGINT)
        assert worker.finish() == 0
    summary = worker.lines["out"][-1]
    assert "worker stopped by SIGINT: delivered 1 payload(s) (a=1)" in summary
    assert summary.endswith("; 1 store outage(s)")


def test_exit_codes_of_the_real_command(app: Path, process: Callable[..., Process]) -> None:
    """`python -m gaesignals` exits 2 on a bad import path or bad JSON, 3 on an unreachable
    store, 0 on success, each failure one line on stderr."""
    down = f"memcached://127.0.0.1:{free_port()}"
    cases = [
        (["deliver", "cliapp_missing:mapping"], 2),
        (["deliver", "cliapp:nope"], 2),
        (["send", "a", "--data", "{"], 2),
        (["--store", down, "deliver", "cliapp:mapping"], 3),
        (["--store", down, "worker", "--once", "cliapp:mapping"], 3),
        (["--store", "memory://", "deliver", "cliapp:mapping"], 0),
    ]
    running = [(process(*argv), argv, code) for argv, code in cases]
    for each, argv, code in running:
        assert each.finish() == code, (argv, each.lines)
        if code:
            assert len(each.lines["err"]) == 1, each.lines
            assert each.lines["err"][0].startswith("gaesignals: error: ")
        else:
            assert each.lines["out"] == ["delivered 0 payload(s)"]

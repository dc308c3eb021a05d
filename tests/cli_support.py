"""What the command line's tests share: a project directory with modules the CLI can name,
the stores it runs against, and ``python -m gaesignals`` as a real process."""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import gaesignals
from gaesignals.cli import main
from gaesignals.pytest_plugin import make_store, store_url

ROOT = Path(gaesignals.__file__).resolve().parent.parent
SECRET = "k" * 40

APP = """
import json, os, time
from pathlib import Path
from gaesignals import SignalMapping, pass_signal_name

got = []

def record(data):
    got.append(data)
    if os.environ.get("CLIAPP_LOG"):
        with open(os.environ["CLIAPP_LOG"], "a") as log:
            log.write(json.dumps(data) + "\\n")

def fail(data):
    raise RuntimeError("boom")

@pass_signal_name
def named(data, signal_name):
    got.append((signal_name, data))

def slow(data):
    # Tells the test it started, then waits (bounded) for the test to let it finish.
    Path("started").touch()
    deadline = time.monotonic() + 20
    while not Path("go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    record(data)

mapping = SignalMapping([("a", record), ("b", record)])
pairs = [("a", record)]
failing = {"f": fail}
mixed = {"ok": [record, named], "half": [record, fail]}
slow_mapping = {"slow": slow}

def make():
    return {"a": record}

def explode():
    raise RuntimeError("no mapping today")

not_a_mapping = 42
nothing = None
empty = {}
"""

RECEIVERS = """
from gaesignals import receiver
from cliapp import record

@receiver("a")
def on_a(data):
    record(data)
"""


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project directory, made the current one, with modules the CLI can name."""
    (tmp_path / "cliapp.py").write_text(APP)
    (tmp_path / "cliapp_receivers.py").write_text(RECEIVERS)
    (tmp_path / "cliapp_nothing.py").write_text("")
    (tmp_path / "cliapp_broken.py").write_text("import cliapp_no_such_dependency\n")
    (tmp_path / "cliapp_pkg").mkdir()
    (tmp_path / "cliapp_pkg" / "__init__.py").write_text("")
    (tmp_path / "cliapp_pkg" / "signals.py").write_text(
        "from gaesignals import connect\nfrom cliapp import record\nconnect('c', record)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # main() adds the current directory
    for name in list(os.environ):
        if name.startswith("GAESIGNALS_"):
            monkeypatch.delenv(name)
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("cliapp")]:
        del sys.modules[name]


@pytest.fixture
def memcached_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A flushed real memcached, configured (with a secret key) for the test's own sends."""
    monkeypatch.setenv("GAESIGNALS_SECRET_KEY", SECRET)
    store, closable = make_store("memcached", request)
    gaesignals.configure(store=store)
    yield store_url("memcached", request)
    closable.close()


def got() -> list[Any]:
    """What the project's ``record`` handler received in this process."""
    result: list[Any] = sys.modules["cliapp"].got
    return result


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``main(argv)`` in this process: its exit code, stdout and stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    """The one line a failure writes (after any log lines the library wrote before it)."""
    lines = err.splitlines()
    assert lines, "nothing on stderr"
    assert lines[-1].startswith("gaesignals: error: "), err
    assert sum(line.startswith("gaesignals: error: ") for line in lines) == 1, err
    assert "Traceback" not in err
    return lines[-1]


class Process:
    """A ``python -m gaesignals`` process whose output lines are collected as they come."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "gaesignals", *argv],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: dict[str, list[str]] = {"out": [], "err": []}
        self.changed: queue.Queue[None] = queue.Queue()
        self.readers = [
            threading.Thread(target=self._read, args=(stream, which), daemon=True)
            for stream, which in ((self.popen.stdout, "out"), (self.popen.stderr, "err"))
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, stream: Any, which: str) -> None:
        for line in stream:
            self.lines[which].append(line.rstrip("\n"))
            self.changed.put(None)
        self.changed.put(None)

    def wait_for(self, which: str, test: Callable[[str], bool], timeout: float = 20) -> str:
        """The first line of ``which`` output passing ``test``, waiting for it (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines[which]:
                if test(line):
                    return line
            left = deadline - time.monotonic()
            if left <= 0 or (self.popen.poll() is not None and self.changed.empty()):
                raise AssertionError(f"no such line in {which}: {self.lines}")
            with contextlib.suppress(queue.Empty):
                self.changed.get(timeout=min(left, 0.5))

    def finish(self, timeout: float = 20) -> int:
        code = self.popen.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=timeout)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()
        return code

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.finish()


def environment(**extra: str) -> dict[str, str]:
    """A child process's environment: this one without GAESIGNALS_*, this checkout first on
    the path, the test secret key, and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAESIGNALS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["GAESIGNALS_SECRET_KEY"] = SECRET
    env.update(extra)
    return env


@pytest.fixture
def process(app: Path) -> Iterator[Callable[..., Process]]:
    """Starts ``python -m gaesignals ARGV`` in the project directory (``**env`` added to its
    environment); whatever is still running at the end of the test is killed."""
    started: list[Process] = []

    def start(*argv: str, **environ: str) -> Process:
        started.append(Process(list(argv), app, environment(**environ)))
        return started[-1]

    yield start
    for each in started:
        each.stop()

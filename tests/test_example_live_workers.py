"""The example's live page served as the README runs it on memcached (``scripts/run_example.sh``:
gunicorn, three worker processes sharing the store), in a real headless chromium: a greeting
reaches every window whichever worker each one polls, every kind of target too, and a server
killed mid-poll and started again on the same port is picked up where the windows were.

Skipped only where chromium, memcached or playwright is missing and CI is not set.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import gaesignals
from example_app.live import PUBLISHED
from gaesignals import send_to_browser
from gaesignals.config import store_from_url
from gaesignals.testing import MemcachedServer, free_port

from .dev_server import stop_group
from .example_app_support import (
    ROOT,
    _not_on_app_engine,  # noqa: F401 (an autouse fixture)
)
from .live_support import (
    EXPECTED_OUTAGE,
    POLL_SECONDS,
    Visitor,
    Window,
    chromium_browser,
    unexpected,
    visitor,
)

pytestmark = pytest.mark.slow

RUN_SCRIPT = ROOT / "scripts" / "run_example.sh"
SECRET = "live-workers-" + "s" * 40
#: A killed server drops its poll mid-answer, then refuses connections until it is back.
EXPECTED_RESTART = (EXPECTED_OUTAGE, "net::ERR_EMPTY_RESPONSE", "net::ERR_CONNECTION_RESET")


class Gunicorn:
    """The run script's gunicorn on a fixed port, started and killed at will."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.port = free_port()
        self.url = url
        self.tmp_path = tmp_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GAESIGNALS_")}
        env.update(
            PORT=str(self.port),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            GAESIGNALS_NO_INSTALL="1",
            GAESIGNALS_STORE=self.url,
            GAESIGNALS_SECRET_KEY=SECRET,
            EXAMPLE_POLL_SECONDS=str(POLL_SECONDS),
            WORKERS="3",
        )
        self.starts += 1
        out = self.tmp_path / f"stdout{self.starts}"
        err = self.tmp_path / f"stderr{self.starts}"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [str(RUN_SCRIPT)],
                cwd=self.tmp_path,
                env=env,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        self._wait_until_serving(out, err)

    def _wait_until_serving(self, out: Path, err: Path) -> None:
        assert self.proc is not None
        for _ in range(1200):  # up to ~60 s
            if "serving on" in out.read_text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"the example did not start:\n{err.read_text()}")

    def kill(self) -> None:
        """Kill every process of the server at once, polls under way included."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_group(self.proc)


@pytest.fixture
def server(gaesignals_memcached: MemcachedServer, tmp_path: Path) -> Iterator[Gunicorn]:
    gaesignals_memcached.flush()
    # This process sends to the same windows, as another instance would.
    store = store_from_url(gaesignals_memcached.url)
    gaesignals.configure(store=store, secret_key=SECRET)
    found = Gunicorn(gaesignals_memcached.url, tmp_path)
    found.start()
    try:
        yield found
    finally:
        found.stop()
        store.close()


@pytest.fixture
def browser(server: Gunicorn) -> Iterator[Any]:
    with chromium_browser() as found:
        yield found


def windows_of(*visitors: Visitor) -> list[Window]:
    return [window for each in visitors for window in each.windows]


def test_greetings_and_targets_cross_worker_processes(browser: Any, server: Gunicorn) -> None:
    """Two visitors with two windows each, polling whichever of three workers answers: a
    greeting signed in one window shows in the three others, and each target reaches its
    windows only."""
    ann, bob = visitor(browser, server.base), visitor(browser, server.base)
    ann.sign_in("11111")
    for each in (ann, bob, ann, bob):
        each.open()
    signer = bob.windows[0]
    signer.page.fill("form[action='/send'] input[name=text]", "hello across workers")
    signer.page.click("form[action='/send'] button")
    for window in [window for window in windows_of(ann, bob) if window is not signer]:
        window.wait_for_line("signed the guestbook: hello across workers")
    asker = ann.windows[0]
    for to in ("window", "session", "user"):
        asker.ping(to)
        asker.wait_for_line(f"pong for this {to}")
    asker.ping("everyone")
    for window in windows_of(ann, bob):
        window.wait_for_line("pong for everyone")
    heard = [len(window.lines_with("pong for this")) for window in windows_of(ann, bob)]
    assert heard == [3, 2, 0, 0]
    for window in windows_of(ann, bob):
        assert window.errors == []


def test_a_killed_server_is_picked_up_where_the_windows_were(
    browser: Any, server: Gunicorn
) -> None:
    """Every worker is killed while the windows poll; a greeting sent meanwhile (by another
    process, on the shared store) shows once in each window after the server is back on its
    port."""
    guest = visitor(browser, server.base)
    guest.open(), guest.open()
    server.kill()
    greeting = {"text": "while down", "user": "7", "at": 0, "pid": 0}
    send_to_browser(PUBLISHED, greeting, broadcast=True)
    server.start()
    for window in guest.windows:
        window.page.set_default_timeout(60_000)  # the client's backoff, then the restart
        window.wait_for_line("signed the guestbook: while down")
        assert len(window.lines_with("while down")) == 1
        assert unexpected(window.errors, *EXPECTED_RESTART) == []

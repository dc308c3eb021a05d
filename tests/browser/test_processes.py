"""Browsers and posters in different processes, over a shared memcached: a message another
process posts reaches a poll waiting here at its next read."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Any

import pytest
import webtest

from gaesignals.browser import Bridge
from gaesignals.stores import Store
from gaesignals.testing.servers import MemcachedServer
from tests.async_support import WAIT

from .support import SECRET, WINDOW, poll, signals_of


def child(code: str, server: MemcachedServer) -> str:
    """Run ``code`` in a fresh interpreter sharing the memcached and the secret key."""
    env = {**os.environ, "GAESIGNALS_STORE": server.url, "GAESIGNALS_SECRET_KEY": SECRET}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=WAIT * 3
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


pytestmark = [
    pytest.mark.gaesignals_config(secret_key=SECRET),
    pytest.mark.gaesignals_stores("memcached"),
]


def test_a_post_from_another_process_reaches_a_waiting_poll(
    gaesignals_store: Store, gaesignals_memcached: MemcachedServer
) -> None:
    """A poll waiting in this process answers with what another process posted, found by
    one of its reads (nothing wakes it but the cache)."""
    app = webtest.TestApp(Bridge(poll_seconds=WAIT * 2, poll_interval=0.05))
    cursor = poll(app)["cursor"]
    answers: list[dict[str, Any]] = []
    waiting = threading.Thread(target=lambda: answers.append(poll(app, cursor)))
    waiting.start()
    child(
        "from gaesignals import send_to_browser; "
        f"send_to_browser('elsewhere', {{'pid': 1}}, window={WINDOW!r})",
        gaesignals_memcached,
    )
    waiting.join(WAIT * 3)
    assert not waiting.is_alive()
    assert signals_of(answers[0]) == [("elsewhere", {"pid": 1})]

"""Child-process bodies for ``test_capacity_processes.py``: senders that flood one undeclared
signal.

Started with the ``spawn`` method (see :mod:`tests.harness`), so they live in an importable
module. Each takes ``path`` (the base name of its report files) and ``seconds`` first, as
:class:`tests.harness.Run` passes them.
"""

from __future__ import annotations

import json
from pathlib import Path

import gaesignals
from gaesignals import send_multi
from gaesignals.config import store_from_url

from .concurrency_workers import SECRET_KEY, child

#: The one signal every sender floods; nobody declares it.
FLOODED = "flooded"


def configure(url: str) -> None:
    """This process's store at ``url``, signing JSON frames (a small payload's frame is about
    70 bytes, and every frame is verified)."""
    gaesignals.configure(store=store_from_url(url), secret_key=SECRET_KEY, codec="json")


def flood(path: str, seconds: float, url: str, first: int, count: int, batch: int) -> None:
    """Send ids ``first`` to ``first + count`` to :data:`FLOODED`, ``batch`` at a time with
    ``send_multi`` (each batch is one signal's payloads); any send that raises fails the
    child. Reports how many it sent."""
    with child(f"{path}.error", f"{path}.log"):
        configure(url)
        for start in range(first, first + count, batch):
            stop = min(start + batch, first + count)
            send_multi([(FLOODED, n) for n in range(start, stop)])
        Path(f"{path}.json").write_text(json.dumps({"sent": count, "seconds": seconds}))

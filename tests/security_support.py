"""Keys and helpers shared by the security suites (``test_security_*``): frames written as an
attacker would, a collecting handler, one ``deliver`` call."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import gaesignals
from gaesignals import deliver
from gaesignals.config import get_settings
from gaesignals.keys import signal_keys

from .conftest import RawAccess

KEY_OLD = hashlib.sha256(b"gaesignals test key: old").digest()
KEY_NEW = hashlib.sha256(b"gaesignals test key: new").digest()
KEY_ATTACKER = hashlib.sha256(b"gaesignals test key: attacker").digest()


# -- helpers --------------------------------------------------------------------------------------


def use(raw: RawAccess, **options: Any) -> None:
    """Reconfigure gaesignals on the fixture's store with extra options."""
    gaesignals.configure(store=raw.store, **options)


def queue_key(name: str) -> str:
    return signal_keys(name, get_settings().namespace).queue


def collector() -> tuple[list[Any], Callable[[Any], None]]:
    got: list[Any] = []

    def handler(data: Any) -> None:
        got.append(data)
        close = getattr(data, "close", None)  # a file a gadget opened: never leak it
        if callable(close):
            close()

    return got, handler


def run_deliver(name: str, handler: Callable[[Any], None], reliable: bool, **kw: Any) -> int:
    return deliver({name: handler}, reliable=reliable, **kw)

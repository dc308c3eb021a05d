"""What the delivery tests share: a signal's queue key, and a handler that collects."""

from __future__ import annotations

from typing import Any

from gaesignals.config import get_settings
from gaesignals.keys import signal_keys


def queue_key(name: str) -> str:
    """The queue key of signal ``name`` under the current settings."""
    return signal_keys(name, get_settings().namespace).queue


def collect() -> tuple[list[Any], Any]:
    """A list and a handler that appends each payload it is given to it."""
    got: list[Any] = []
    return got, got.append

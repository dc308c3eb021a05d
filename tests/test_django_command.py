"""The ``deliver_signals`` management command: it delivers and prints the count, weakly or
reliably, in a loop that survives an outage, and fails with a CommandError on bad arguments.

Django is configured once per process (tests/django_setup.py: the example project's settings
with an in-memory database); each test gets a fresh gaesignals store and registry, and the
cleanup of django_support."""

from __future__ import annotations

import io
import logging
from typing import Any

import pytest

import gaesignals
from gaesignals import send
from gaesignals.stores import Store
from gaesignals.testing import DownStore
from tests.django_setup import setup_django

setup_django()

from django.core.management import CommandError, call_command  # noqa: E402

from tests import django_urls  # noqa: E402

from .django_support import (  # noqa: E402
    _clean,  # noqa: F401 (an autouse fixture)
    record,
)

# -- the management command ----------------------------------------------------------------------


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("deliver_signals", *args, stdout=out)
    return out.getvalue()


def test_command_delivers_and_prints_the_count(gaesignals_store: Store) -> None:
    """``manage.py deliver_signals`` delivers the registered receivers once."""
    gaesignals.connect("audit", record)
    send("audit", 1)
    send("audit", 2)
    assert run() == "delivered 2\n"
    assert django_urls.DELIVERED == [1, 2]
    assert run() == "delivered 0\n"
    send("audit", 3)
    assert run("--verbosity", "0") == ""
    assert django_urls.DELIVERED == [1, 2, 3]


def test_command_reliable_keeps_failures(gaesignals_store: Store) -> None:
    """``--reliable --max-attempts 2``: a failing payload stays, then goes to dead letters."""
    gaesignals.declare("audit", retry_delay=0)  # a failed payload is retried at once

    def broken(data: Any) -> None:
        raise RuntimeError("nope")

    gaesignals.connect("audit", broken)
    send("audit", "x")
    assert run("--reliable", "--max-attempts", "2") == "delivered 0\n"
    assert gaesignals.dead_letters("audit") == []
    assert run("--reliable", "--max-attempts", "2") == "delivered 0\n"
    assert gaesignals.dead_letters("audit") == ["x"]


def test_command_weak_overrides_a_declared_mode(gaesignals_store: Store) -> None:
    """``--weak`` delivers a signal declared reliable at most once: a failure is dropped."""

    def broken(data: Any) -> None:
        raise RuntimeError("nope")

    gaesignals.connect("audit", broken, reliable=True)
    send("audit", "x")
    run("--weak")
    assert gaesignals.deliver({"audit": record}) == 0


def test_command_loop_runs_rounds(gaesignals_store: Store) -> None:
    """``--loop --rounds N --interval 0``: N deliveries, each non-empty one printed, then a
    total."""
    gaesignals.connect("audit", record)
    send("audit", 1)
    assert run("--loop", "--rounds", "3", "--interval", "0") == (
        "delivered 1\ndelivered 1 in 3 round(s)\n"
    )


def test_command_errors(gaesignals_store: Store) -> None:
    """Conflicting modes, bad numbers and a store outage are command errors."""
    with pytest.raises(CommandError):
        run("--reliable", "--weak")
    with pytest.raises(CommandError, match="lease"):
        run("--reliable", "--lease", "0")
    gaesignals.connect("audit", record)
    gaesignals.configure(store=DownStore())
    with pytest.raises(CommandError, match="no delivery: the cache is down"):
        run()


def test_command_loop_survives_an_outage(caplog: pytest.LogCaptureFixture) -> None:
    """A looping worker logs an outage and carries on."""
    gaesignals.connect("audit", record)
    gaesignals.configure(store=DownStore())
    with caplog.at_level(logging.ERROR, logger="gaesignals"):
        out = run("--loop", "--rounds", "2", "--interval", "0")
    assert out == "delivered 0 in 2 round(s)\n"
    assert len(caplog.records) == 2

"""``declare(name, coalesce=, debounce=, debounce_max=)``: the options kept, merged and refused."""

from __future__ import annotations

from typing import Any

import pytest

import gaesignals
from gaesignals import ConfigurationError, declare
from gaesignals.registration import MAX_RETRY_DELAY, SignalSpec


def test_coalescing_options_are_kept_and_merged() -> None:
    """A declaration keeps coalesce, debounce and debounce_max; a later one keeps what it
    leaves out."""
    spec = declare("reindex", coalesce=True, debounce=2, debounce_max=30)
    assert (spec.coalesce, spec.debounce, spec.debounce_max) == (True, 2, 30)
    spec = declare("reindex", reliable=True)
    assert (spec.coalesce, spec.debounce, spec.debounce_max, spec.reliable) == (True, 2, 30, True)
    assert gaesignals.registry.spec("reindex") == spec


def test_an_undeclared_signal_does_not_coalesce() -> None:
    """Without a declaration a signal neither coalesces nor debounces."""
    spec = gaesignals.registry.spec("plain")
    assert (spec.coalesce, spec.debounce, spec.debounce_max) == (False, None, None)


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"debounce": 1}, "coalesce=True"),
        ({"coalesce": True, "debounce": 0}, "debounce of signal 'x' must be"),
        ({"coalesce": True, "debounce": -1}, "debounce of signal 'x' must be"),
        ({"coalesce": True, "debounce": float("nan")}, "must be a number of seconds"),
        ({"coalesce": True, "debounce": True}, "must be a number of seconds"),
        ({"coalesce": True, "debounce": "1"}, "must be a number of seconds"),
        ({"coalesce": True, "debounce": MAX_RETRY_DELAY + 1}, "must be a number of seconds"),
        ({"coalesce": True, "debounce_max": 5}, "give a debounce too"),
        ({"coalesce": True, "debounce": 5, "debounce_max": 1}, "at most debounce_max"),
        ({"coalesce": "yes"}, "coalesce must be a bool"),
    ],
)
def test_options_that_cannot_work_are_refused(options: dict[str, Any], says: str) -> None:
    """Each impossible combination raises a ConfigurationError (a ValueError) saying why,
    and leaves the signal's earlier declaration as it was."""
    declare("x", reliable=True)
    with pytest.raises(ConfigurationError, match=says) as raised:
        declare("x", **options)
    assert isinstance(raised.value, ValueError)
    assert gaesignals.registry.spec("x") == SignalSpec("x", reliable=True)


def test_receiver_options_declare_coalescing_too() -> None:
    """``@receiver(name, coalesce=True, debounce=...)`` declares as ``declare`` does."""

    @gaesignals.receiver("cache_changed", coalesce=True, debounce=0.5)
    def handler(data: object) -> None:
        pass

    spec = gaesignals.registry.spec("cache_changed")
    assert spec.coalesce and spec.debounce == 0.5 and spec.debounce_max is None

"""deliver(): sending and delivering in weak mode (the default), the same on every store."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import gaesignals
from gaesignals import Signal, SignalMapping, deliver, send, send_multi

from ..conftest import RawAccess
from .support import collect, queue_key


def test_send_then_deliver_in_order(store: Any) -> None:
    """Payloads reach the handler once each, in send order, and deliver counts them."""
    got, handler = collect()
    for i in range(5):
        Signal("orders").send({"n": i})
    assert deliver([("orders", handler)]) == 5
    assert got == [{"n": i} for i in range(5)]
    assert deliver([("orders", handler)]) == 0
    assert len(got) == 5


def test_send_without_data_delivers_none(store: Any) -> None:
    """``send()`` with no data delivers ``None``, as the seed's ``Signal('x').send()``."""
    got, handler = collect()
    Signal("ping").send()
    send("ping")
    assert deliver({"ping": handler}) == 2
    assert got == [None, None]


def test_several_handlers_and_signals(store: Any) -> None:
    """Every handler of a signal sees every payload; unrelated signals stay pending."""
    first, h1 = collect()
    second, h2 = collect()
    send("a", 1)
    send("b", 2)
    assert deliver([("a", [h1, h2])]) == 1
    assert first == [1] and second == [1]
    assert deliver([("b", h1), ("b", h2)]) == 1
    assert first == [1, 2] and second == [1, 2]


def test_send_multi_forms(store: Any) -> None:
    """send_multi takes a dict, names, and (name, data) pairs; repeated names keep order."""
    got, handler = collect()
    send_multi({"x": 1, "y": 2})
    send_multi(["x", ("x", 3), ("y", 4)])
    assert deliver([("x", handler), ("y", handler)]) == 5
    assert got == [1, None, 3, 2, 4]


def test_handler_opts_in_to_signal_name(store: Any) -> None:
    """A handler marked with pass_signal_name gets the name as a keyword."""
    seen: list[tuple[str, Any]] = []

    @gaesignals.pass_signal_name
    def handler(data: Any, signal_name: str) -> None:
        seen.append((signal_name, data))

    send("user_54274_password_change", "new")
    send("user_1_password_change", "other")
    mapping = SignalMapping(
        [("user_54274_password_change", handler), ("user_1_password_change", handler)]
    )
    assert deliver(mapping) == 2
    assert sorted(seen) == [
        ("user_1_password_change", "other"),
        ("user_54274_password_change", "new"),
    ]


def test_weak_handler_error_is_logged_not_raised(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A raising handler is logged with the signal's name; the other payloads still arrive."""
    got: list[Any] = []

    def handler(data: Any) -> None:
        if data == 2:
            raise RuntimeError("boom")
        got.append(data)

    for i in range(4):
        send("flaky", i)
    with caplog.at_level(logging.ERROR, logger="gaesignals"):
        assert deliver({"flaky": handler}) == 3
    assert got == [0, 1, 3]
    assert "'flaky'" in caplog.text and "boom" in caplog.text
    # Weak delivery is at most once: the failed payload is gone.
    assert deliver({"flaky": handler}) == 0


def test_weak_and_reliable_see_pending_sent_by_both_paths(store: Any) -> None:
    """A payload appended while a reliable delivery runs is kept, not overwritten."""
    got: list[Any] = []

    def handler(data: Any) -> None:
        got.append(data)
        if data == 0:
            send("growing", 99)  # appended while we hold the lock

    send("growing", 0)
    assert deliver({"growing": handler}, reliable=True) == 1
    assert deliver({"growing": handler}, reliable=True) == 1
    assert got == [0, 99]


def test_deliver_accepts_every_mapping_form(store: Any) -> None:
    """A list of pairs, a dict and a SignalMapping all work; an empty mapping costs nothing."""
    got, handler = collect()
    send("m", 1)
    send("m", 2)
    send("m", 3)
    assert deliver([("m", handler)]) == 3
    assert got == [1, 2, 3]
    assert deliver([]) == 0
    with pytest.raises(TypeError):
        SignalMapping([("m", "not callable")])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        SignalMapping(["m"])  # type: ignore[list-item]


def test_queue_key_holds_nothing_after_weak_delivery(store: Any, raw: RawAccess) -> None:
    """Weak delivery empties the key (or removes it): nothing lingers to be delivered twice."""
    send("drain", "x")
    assert raw.get(queue_key("drain"))
    deliver({"drain": lambda d: None})
    assert not raw.get(queue_key("drain"))

"""Declared signals, the receivers registry, ``send_now`` and eager sends."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

import gaesignals
from gaesignals import (
    PayloadTooLarge,
    SignalsMiddleware,
    UnserializablePayload,
    autodiscover,
    connect,
    dead_letters,
    declare,
    deliver,
    disconnect,
    pass_signal_name,
    receiver,
    send,
    send_now,
)
from gaesignals.registration import MAX_SHARDS, Registry, SignalSpec
from gaesignals.stores.memory import MemoryStore

from .conftest import RawAccess


def test_declare_merges_options_and_validates() -> None:
    """A later declaration changes only the options it names; bad options are refused."""
    assert declare("audit", reliable=True) == SignalSpec("audit", reliable=True)
    spec = declare("audit", max_attempts=9)
    assert (spec.reliable, spec.max_attempts, spec.lease, spec.shards) == (True, 9, 30, 1)
    assert gaesignals.registry.spec("never-declared") == SignalSpec("never-declared")
    with pytest.raises(ValueError, match="lease"):
        declare("x", lease=0)
    with pytest.raises(ValueError, match="max_attempts"):
        declare("x", max_attempts=0)
    with pytest.raises(ValueError, match="shards"):
        declare("x", shards=MAX_SHARDS + 1)
    with pytest.raises(ValueError, match="ttl"):
        declare("x", ttl=0)
    with pytest.raises(gaesignals.InvalidSignalName):
        declare("")
    assert gaesignals.registry.spec("x") == SignalSpec("x")  # refused declarations left nothing


def test_receivers_connect_once_and_disconnect() -> None:
    registry = Registry()

    def handler(data: Any) -> None: ...

    registry.connect("a", handler)
    registry.connect("a", handler)
    assert registry.receivers("a") == (handler,)
    assert registry.disconnect("a", handler) is True
    assert registry.disconnect("a", handler) is False
    assert registry.names() == []
    gaesignals.connect("b", handler)
    assert disconnect("b", handler) is True
    assert gaesignals.registry.receivers("b") == ()
    with pytest.raises(TypeError):
        registry.connect("a", "not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        registry.receiver()


def test_deliver_without_mapping_uses_receivers(store: Any) -> None:
    """``deliver()`` with no mapping runs every registered receiver, in send order."""
    got: list[Any] = []

    @receiver("signed_up", "logged_in")
    @pass_signal_name
    def record(data: Any, signal_name: str) -> None:
        got.append((signal_name, data))

    send("signed_up", 1)
    send("logged_in", 2)
    send("signed_up", 3)
    send("unrelated", 4)
    assert deliver() == 3
    assert sorted(got) == [("logged_in", 2), ("signed_up", 1), ("signed_up", 3)]
    assert deliver({"unrelated": got.append}) == 1


def test_declared_reliable_signal_is_delivered_reliably(store: Any) -> None:
    """A signal declared reliable keeps a failing payload and dead-letters it after its own
    max_attempts, while a weak signal in the same call loses its failed payload."""
    declare("audit", reliable=True, retry_delay=0, max_attempts=2)

    def fail(data: Any) -> None:
        raise RuntimeError("boom")

    connect("audit", fail)
    connect("casual", fail)
    send("audit", "kept")
    send("casual", "dropped")
    assert deliver() == 0
    assert dead_letters("audit") == []
    assert deliver() == 0  # second failure: max_attempts reached
    assert dead_letters("audit") == ["kept"]
    assert deliver({"casual": print, "audit": print}, reliable=False) == 0  # both gone now


def test_explicit_mode_overrides_declaration(store: Any) -> None:
    declare("audit", reliable=True)
    got: list[Any] = []

    def fail_then_record(data: Any) -> None:
        got.append(data)
        raise RuntimeError("boom")

    send("audit", "x")
    assert deliver({"audit": fail_then_record}, reliable=False) == 0
    assert deliver({"audit": fail_then_record}, reliable=True) == 0  # weak took it: gone
    assert got == ["x"]


def test_middleware_without_mapping_sees_receivers_connected_later(store: Any) -> None:
    got: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    wrapped = SignalsMiddleware(app)
    send("late", 1)
    wrapped({}, lambda *a: None)
    connect("late", got.append)
    wrapped({}, lambda *a: None)
    assert got == [1]


def test_autodiscover_imports_signals_modules(tmp_path: Path) -> None:
    """Packages with a ``signals`` module get it imported; others are skipped; errors inside
    a signals module and unknown packages are raised, never hidden."""
    for package, body in [
        ("gs_app_one", "import gaesignals\ngaesignals.connect('one', print)\n"),
        ("gs_app_broken", "import a_module_that_does_not_exist\n"),
    ]:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
        (tmp_path / package / "signals.py").write_text(body)
    (tmp_path / "gs_app_plain").mkdir()
    (tmp_path / "gs_app_plain" / "__init__.py").write_text("")
    sys.path.insert(0, str(tmp_path))
    try:
        assert autodiscover(["gs_app_one", "gs_app_plain"]) == ["gs_app_one.signals"]
        assert gaesignals.registry.receivers("one") == (print,)
        with pytest.raises(ModuleNotFoundError, match="a_module_that_does_not_exist"):
            autodiscover(["gs_app_broken"])
        with pytest.raises(ModuleNotFoundError):
            autodiscover(["gs_no_such_package"])
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("gs_app_")]:
            del sys.modules[name]


def test_send_now_round_trips_through_the_codec(store: Any) -> None:
    """send_now returns the handlers' results, and the data is what a delivery would see:
    JSON turns tuples into lists; an unserializable payload fails as a send would."""
    connect("calc", lambda data: data["a"] + 1)
    connect("calc", lambda data: type(data["t"]).__name__)
    assert send_now("calc", {"a": 1, "t": (1, 2)}) == [2, "tuple"]
    gaesignals.configure(store=gaesignals.config.get_settings().store, codec="json")
    assert send_now("calc", {"a": 1, "t": (1, 2)}) == [2, "list"]
    with pytest.raises(UnserializablePayload):
        send_now("calc", {"a": object()})
    assert send_now("nobody-listens", 1) == []
    assert send_now("calc", {"a": 5, "t": 0}, mapping={"calc": lambda d: d["a"]}) == [5]


def test_send_now_propagates_handler_errors() -> None:
    def fail(data: Any) -> None:
        raise KeyError("handler bug")

    connect("x", fail)
    with pytest.raises(KeyError, match="handler bug"):
        send_now("x")


def test_eager_setting_runs_receivers_at_send(raw: RawAccess, monkeypatch: Any) -> None:
    """With eager on, a send to a signal with receivers runs them at once and stores nothing;
    a signal without receivers is stored as usual; oversized payloads are still refused."""
    got: list[Any] = []
    connect("now", got.append)
    monkeypatch.setenv("GAESIGNALS_EAGER", "1")
    gaesignals.configure(store=raw.store)
    assert gaesignals.config.get_settings().eager
    send("now", {"n": 1})
    send("later", {"n": 2})
    assert got == [{"n": 1}]
    assert deliver({"now": got.append}) == 0
    assert deliver({"later": got.append}) == 1
    assert got == [{"n": 1}, {"n": 2}]
    with pytest.raises(PayloadTooLarge):
        send("now", b"x" * (raw.store.max_value_size + 1))
    assert len(got) == 2


def test_eager_env_value_is_checked(monkeypatch: Any) -> None:
    monkeypatch.setenv("GAESIGNALS_EAGER", "maybe")
    with pytest.raises(gaesignals.ConfigurationError, match="GAESIGNALS_EAGER"):
        gaesignals.configure(store=MemoryStore())
    monkeypatch.setenv("GAESIGNALS_EAGER", "off")
    assert gaesignals.configure(store=MemoryStore()).eager is False

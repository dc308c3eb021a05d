"""Configuration from configure() and the environment."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Any

import pytest

import gaesignals
from gaesignals import ConfigurationError, config
from gaesignals.stores.memory import MemoryStore


def test_default_is_the_embedded_store_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With nothing set, outside App Engine, the in-process store is used and the log says
    once that it is process-local."""
    for var in ("GAESIGNALS_STORE", "GAE_ENV", "GAE_APPLICATION", "GAESIGNALS_SECRET_KEY"):
        monkeypatch.delenv(var, raising=False)
    with caplog.at_level(logging.INFO, logger="gaesignals"):
        settings = config.get_settings()
        config.get_settings()
    assert isinstance(settings.store, MemoryStore)
    assert caplog.text.count("process-local") == 1


def test_app_engine_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    """On App Engine (GAE_ENV=standard) the default store is App Engine's memcache."""
    from gaesignals.stores.appengine import AppEngineStore

    monkeypatch.delenv("GAESIGNALS_STORE", raising=False)
    monkeypatch.setenv("GAE_ENV", "standard")
    assert isinstance(config.get_settings().store, AppEngineStore)


def test_the_app_engine_testbed_is_not_app_engine(
    gaesignals_testbed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK's testbed sets ``GAE_APPLICATION`` (and the other request variables) in the test
    process; only ``GAE_ENV=standard`` means deployed, so the default store there is the
    embedded one and cron's header is not trusted."""
    for var in ("GAESIGNALS_STORE", "GAE_ENV"):
        monkeypatch.delenv(var, raising=False)
    assert "GAE_APPLICATION" in os.environ
    assert not config.on_app_engine()
    assert isinstance(config.get_settings().store, MemoryStore)


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """GAESIGNALS_STORE, _NAMESPACE, _SECRET_KEY (a comma-separated list) and _CODEC."""
    from gaesignals.stores.memcached import MemcachedStore

    monkeypatch.setenv("GAESIGNALS_STORE", "memcached://127.0.0.1:1,127.0.0.1:2?timeout=0.5")
    monkeypatch.setenv("GAESIGNALS_NAMESPACE", "staging")
    monkeypatch.setenv("GAESIGNALS_SECRET_KEY", "a" * 32 + ", " + "b" * 40)
    monkeypatch.setenv("GAESIGNALS_CODEC", "json")
    settings = config.get_settings()
    assert isinstance(settings.store, MemcachedStore)
    assert len(settings.store.client.clients) == 2
    assert settings.namespace == "staging"
    assert settings.secret_keys == (b"a" * 32, b"b" * 40)
    assert settings.codec == "json"
    settings.store.close()


def test_lost_check_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """GAESIGNALS_LOST_CHECK_INTERVAL sets it (the tests' fixture sets 0); unset, it is 30 s;
    a value that is not a number is refused."""
    assert config.get_settings().lost_check_interval == 0
    monkeypatch.setenv("GAESIGNALS_LOST_CHECK_INTERVAL", "2.5")
    assert gaesignals.configure(store="memory://").lost_check_interval == 2.5
    monkeypatch.delenv("GAESIGNALS_LOST_CHECK_INTERVAL")
    assert gaesignals.configure(store="memory://").lost_check_interval == 30
    monkeypatch.setenv("GAESIGNALS_LOST_CHECK_INTERVAL", "soon")
    with pytest.raises(ConfigurationError, match="GAESIGNALS_LOST_CHECK_INTERVAL"):
        gaesignals.configure(store="memory://")


def test_configure_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Explicit arguments override the environment; omitted ones still come from it."""
    monkeypatch.setenv("GAESIGNALS_NAMESPACE", "fromenv")
    store = MemoryStore()
    settings = gaesignals.configure(store=store)
    assert settings.store is store and settings.namespace == "fromenv"
    assert gaesignals.configure(store="memory://", namespace="x").namespace == "x"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"store": "mongodb://localhost"}, "unknown store URL"),
        ({"store": "redis://h:1?bogus=1"}, "unknown options"),
        ({"store": "redis://h:1?timeout=soon"}, "bad option"),
        ({"store": "redis://h:1,h:2"}, "cluster=true"),
        ({"store": "redis://h:1?cluster=maybe"}, "cluster must be"),
        ({"store": "redis://h?cluster=true"}, "host:port"),
        ({"store": "redis://h:1/3?cluster=true"}, "no unix sockets nor databases"),
        ({"store": "valkey://h:1?bogus=1"}, "unknown options"),
        ({"store": "valkeys://h:1,h:2"}, "cluster=true"),
        ({"store": "valkey://h:1/3?cluster=true"}, "no unix sockets nor databases"),
        ({"store": "memcached://"}, "memcached://"),
        ({"store": "memcached://host"}, "host:port"),
        ({"store": "memcached://h:1?bogus=1"}, "unknown options"),
        ({"namespace": "has space"}, "namespace"),
        ({"namespace": "a:b"}, "namespace"),
        ({"secret_key": "short"}, "at least 32 bytes"),
        ({"codec": "yaml"}, "codec"),
        ({"lost_check_interval": -1}, "0 or more seconds"),
        ({"lost_check_interval": float("nan")}, "0 or more seconds"),
        ({"lost_check_interval": "30"}, "number of seconds"),
    ],
)
def test_bad_settings_raise_configuration_error(kwargs: dict[str, str], message: str) -> None:
    """Settings that cannot work are refused with a message naming the problem."""
    with pytest.raises(ConfigurationError, match=message):
        gaesignals.configure(**kwargs)  # type: ignore[arg-type]


def test_namespaces_separate_signals() -> None:
    """Two namespaces on one store never see each other's signals."""
    store = MemoryStore()
    got: list[object] = []
    gaesignals.configure(store=store, namespace="one")
    gaesignals.send("s", 1)
    gaesignals.configure(store=store, namespace="two")
    assert gaesignals.deliver({"s": got.append}) == 0
    gaesignals.configure(store=store, namespace="one")
    assert gaesignals.deliver({"s": got.append}) == 1


def test_shared_store_without_key_warns(caplog: pytest.LogCaptureFixture) -> None:
    """A shared cache with pickle and no secret key gets a warning at configuration."""
    with caplog.at_level(logging.WARNING, logger="gaesignals"):
        settings = gaesignals.configure(store="memcached://127.0.0.1:1")
    assert "no secret key" in caplog.text
    settings.store.close()  # type: ignore[attr-defined]


def test_import_pulls_in_no_backend() -> None:
    """import gaesignals imports neither pymemcache, redis-py nor App Engine's SDK."""
    code = (
        "import sys, gaesignals; "
        "backends = ('pymemcache', 'redis', 'google.appengine'); "
        "bad = [m for m in sys.modules if m.startswith(backends)]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


class _Delegating:
    """A store wrapper that forwards every member to the store it wraps, as a tracing or
    metrics wrapper would."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_store_that_delegates_through_getattr_is_accepted() -> None:
    """A wrapper that has the store's members only through ``__getattr__`` is a store on every
    Python (3.12+ would refuse it in a static ``isinstance`` check), and works."""
    wrapped = _Delegating(MemoryStore())
    gaesignals.configure(store=wrapped)  # type: ignore[arg-type]
    got: list[Any] = []
    gaesignals.send("wrapped", 1)
    assert gaesignals.deliver({"wrapped": got.append}) == 1
    assert got == [1]


def test_an_object_missing_a_store_member_is_refused() -> None:
    """Something without ``connection`` or a capability attribute is refused with TypeError."""

    class NoCapabilities:
        def connection(self) -> None:
            return None

    with pytest.raises(TypeError, match="must be a Store"):
        gaesignals.configure(store=NoCapabilities())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a Store"):
        gaesignals.configure(store=object())  # type: ignore[arg-type]


SECRET = "s3cret-" + "k" * 40


def test_settings_never_show_the_secret_keys() -> None:
    """The settings' repr and str say how many secret keys there are, never what they are."""
    settings = gaesignals.configure(store=MemoryStore(), secret_key=[SECRET, SECRET + "-old"])
    for shown in (repr(settings), str(settings), f"{settings}"):
        assert "s3cret" not in shown
        assert "<2 key(s), not shown>" in shown
    assert "namespace=''" in repr(settings)


def test_a_redis_store_never_shows_its_password() -> None:
    """A Redis store built from a URL with a password shows host, port and database only."""
    pytest.importorskip("redis")
    from gaesignals.stores.redis import RedisStore

    store = RedisStore.from_url("redis://alice:hunter2-secret@127.0.0.1:6390/3")
    settings = gaesignals.configure(store=store)
    for shown in (repr(store), repr(store.router), repr(settings), repr(store.client)):
        assert "hunter2" not in shown
    assert repr(store) == "RedisStore(127.0.0.1:6390/3)"


def test_a_cron_endpoint_never_shows_its_token() -> None:
    """The cron endpoint's repr names its mapping, not its bearer token."""
    from gaesignals.cron import CronDeliveryApp

    endpoint = CronDeliveryApp({"audit": print}, token=SECRET)
    assert "s3cret" not in repr(endpoint)

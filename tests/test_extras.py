"""A missing optional dependency is a MissingExtra that says what to install, never a bare
ModuleNotFoundError; the command line prints it as one line and exits 2.

Each test hides the dependency as if it were not installed: ``sys.modules[name] = None`` (and
its submodules forgotten) makes every import of it fail as a missing module does.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable

import pytest

import gaesignals
from gaesignals import ConfigurationError
from gaesignals._extras import EXTRAS, requires
from gaesignals.exceptions import MissingExtra

from .cli_support import environment

Hide = Callable[..., None]


@pytest.fixture
def hide(monkeypatch: pytest.MonkeyPatch) -> Hide:
    """Hides modules (with their submodules) from imports for the test; monkeypatch puts
    them back after it."""

    def hide_modules(*names: str) -> None:
        for name in names:
            for loaded in [m for m in sys.modules if m.startswith(name + ".")]:
                monkeypatch.delitem(sys.modules, loaded)
            monkeypatch.setitem(sys.modules, name, None)

    return hide_modules


def _says_install(error: MissingExtra, extra: str) -> None:
    assert isinstance(error, ConfigurationError) and isinstance(error, ModuleNotFoundError)
    assert error.extra == extra
    assert f'pip install "gaesignals[{extra}]"' in str(error)
    assert isinstance(error.__cause__, ModuleNotFoundError)
    assert "\n" not in str(error)


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [
        ("memcached://127.0.0.1:11211", "pymemcache", "memcached"),
        ("redis://127.0.0.1:6379", "redis", "redis"),
        ("valkeys://127.0.0.1:6379", "redis", "redis"),
        ("valkey://127.0.0.1:1,127.0.0.1:2?cluster=true", "redis", "redis"),
        ("appengine://", "google.appengine", "appengine"),
    ],
)
def test_a_store_url_without_its_extra_says_what_to_install(
    url: str, module: str, extra: str, hide: Hide
) -> None:
    """configure(store=URL) without the store's client library raises MissingExtra, a
    ConfigurationError naming the extra to install, caused by the ModuleNotFoundError."""
    hide(module)
    with pytest.raises(MissingExtra) as raised:
        gaesignals.configure(store=url)
    _says_install(raised.value, extra)
    assert raised.value.name == module


@pytest.mark.parametrize(
    ("integration", "module", "extra"),
    [
        ("gaesignals.contrib.flask", "flask", "flask"),
        ("gaesignals.contrib.django.middleware", "django", "django"),
        ("gaesignals.contrib.django.apps", "django", "django"),
        ("gaesignals.dashboard", "prometheus_client", "dashboard"),
    ],
)
def test_an_integration_without_its_extra_is_an_import_error_that_says_what_to_install(
    integration: str, module: str, extra: str, hide: Hide, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Importing a framework integration without its framework raises MissingExtra, which is
    also an ImportError, so ``try: import ... except ImportError`` still works."""
    hide(module)
    package = integration.rpartition(".")[0] if "contrib.django" in integration else integration
    for loaded in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        monkeypatch.delitem(sys.modules, loaded)  # imported afresh, put back after the test
    with pytest.raises(ImportError) as raised:
        importlib.import_module(integration)
    assert isinstance(raised.value, MissingExtra)
    _says_install(raised.value, extra)


def test_a_module_missing_inside_an_installed_dependency_is_left_alone() -> None:
    """Only the extra's own modules (or their parents) count as the extra missing: a module
    missing from inside an installed one is a broken install, and its error is kept."""
    with pytest.raises(ModuleNotFoundError) as raised, requires("redis"):
        raise ModuleNotFoundError("No module named 'redis.gone'", name="redis.gone")
    assert not isinstance(raised.value, MissingExtra)
    with pytest.raises(ModuleNotFoundError) as raised, requires("redis"):
        raise ModuleNotFoundError("No module named 'yaml'", name="yaml")
    assert not isinstance(raised.value, MissingExtra)
    with pytest.raises(MissingExtra), requires("appengine"):
        raise ModuleNotFoundError("No module named 'google'", name="google")


def test_every_extra_in_the_table_is_one_pyproject_declares() -> None:
    """The extras the errors name are the package's own (a typo would send people to pip
    with a name it warns about and ignores)."""
    from importlib.metadata import metadata

    declared = set(metadata("gaesignals").get_all("Provides-Extra") or [])
    assert set(EXTRAS) <= declared


def _run(code: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter, this checkout first on the path."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=environment(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("argv", "module", "extra"),
    [
        (["--store", "memcached://127.0.0.1:11211", "send", "hello"], "pymemcache", "memcached"),
        (["--store", "valkey://127.0.0.1:6379", "send", "hello"], "redis", "redis"),
        (["dashboard", "--app", "json", "--port", "0"], "prometheus_client", "dashboard"),
    ],
)
def test_the_cli_prints_one_line_and_exits_2_without_the_extra(
    argv: list[str], module: str, extra: str
) -> None:
    """``gaesignals --store URL ...`` without the store's extra (or ``gaesignals dashboard``
    without the dashboard's) prints the one line that says what to install, no traceback,
    and exits 2 as for any bad setting."""
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from gaesignals.cli import main\n"
        "sys.exit(main())"
    )
    done = _run(code, *argv)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"gaesignals: error: {EXTRAS[extra].needed_by} needs {EXTRAS[extra].package}, which "
        f'is not installed: pip install "gaesignals[{extra}]"'
    ]


def test_tracing_without_the_api_is_silent_until_asked_for() -> None:
    """Without opentelemetry-api, sends and deliveries record nothing and say nothing (even
    with a provider named in the environment, which only the API reads); giving use() a
    provider is asking for tracing, and raises MissingExtra."""
    code = """
import sys
sys.modules["opentelemetry"] = None
import gaesignals
from gaesignals import tracing
from gaesignals.exceptions import MissingExtra
gaesignals.configure(store="memory://")
gaesignals.send("s", 1)
got = []
assert gaesignals.deliver({"s": got.append}) == 1 and got == [1]
assert not tracing.active()
try:
    tracing.use(tracer_provider=object())
except MissingExtra as error:
    print(error.extra, error)
"""
    done = _run(code, OTEL_PYTHON_TRACER_PROVIDER="sdk_tracer_provider")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout == (
        "otel tracing needs opentelemetry-api, which is not installed: "
        'pip install "gaesignals[otel]"\n'
    )

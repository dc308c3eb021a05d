"""The ``gaesignals`` command line's settings options (before or after the command, bad ones exit
2, an unreachable store exits 3), the process-local store's warning, the store help, and the
declared console script.

In-process, through ``main()``; the worker's real processes are in test_cli_worker.py."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

import gaesignals
from gaesignals import cli
from gaesignals.cli import main
from gaesignals.stores.memory import MemoryStore
from gaesignals.testing import free_port

from . import cli_support as support
from .cli_support import ROOT, SECRET, error_line, got, run

app = support.app
memcached_url = support.memcached_url


# -- settings -------------------------------------------------------------------------------------


def test_settings_come_from_options_before_or_after_the_command(
    app: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch, memcached_url: str
) -> None:
    """--store, --namespace and --codec work like their GAESIGNALS_* variables, given before or
    after the command; without any of them main() uses the settings it finds, and it puts
    those back after a command that had its own."""
    url = memcached_url
    assert run(capsys, "--store", url, "--namespace", "one", "send", "a", "--data", "1") == (
        0,
        "sent 1 payload to 'a'\n",
        "",
    )
    assert run(capsys, "send", "a", "--data", "2", "--store", url, "--namespace", "one")[0] == 0
    monkeypatch.setenv("GAESIGNALS_STORE", url)
    argv = ["send", "a", "--data", "[3]", "--namespace", "one", "--codec", "json"]
    assert run(capsys, *argv)[0] == 0
    assert run(capsys, "deliver", "cliapp:mapping", "--namespace", "two")[1] == (
        "delivered 0 payload(s)\n"
    )
    assert run(capsys, "deliver", "cliapp:mapping")[1] == "delivered 0 payload(s)\n"
    monkeypatch.setenv("GAESIGNALS_NAMESPACE", "one")
    assert run(capsys, "--codec", "pickle", "deliver", "cliapp:mapping")[1] == (
        "delivered 3 payload(s)\n"
    )
    assert got() == [1, 2, [3]]  # a JSON frame is read whatever the codec
    assert gaesignals.config.get_settings().namespace == ""  # the test's own settings, back


def test_bad_settings_exit_2(app: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad store URL, namespace, codec or secret key (from the environment) exits 2."""
    for argv, message in [
        (["--store", "redis-ish://x"], "unknown store URL"),
        (["--namespace", "no spaces"], "namespace"),
        (["--store", "memcached://nohostport"], "expected host:port"),
        (
            ["--store", "memcached://"],
            "'memcached://' names no server: a memcached:// URL needs host:port, "
            "e.g. memcached://127.0.0.1:11211",
        ),
        (["--store", "memcached://:11211"], "e.g. memcached://127.0.0.1:11211"),
        (["--store", "memcache://x:1"], "redis://host:port[/db], rediss://host:port"),
    ]:
        code, out, err = run(capsys, *argv, "deliver", "cliapp:mapping")
        assert (code, out) == (2, "")
        assert message in error_line(err)
    monkeypatch.setenv("GAESIGNALS_SECRET_KEY", "short")
    code, _, err = run(capsys, "--store", "memory://", "send", "a")
    assert code == 2 and "at least 32 bytes" in error_line(err)
    monkeypatch.delenv("GAESIGNALS_SECRET_KEY")
    assert run(capsys, "--codec", "xml", "send", "a")[0] == 2
    assert run(capsys, "--help")[0] == 0
    assert "GAESIGNALS_SECRET_KEY" in run(capsys, "send", "--help")[1]
    assert run(capsys)[0] == 2


def test_unreachable_store_is_one_line_and_exit_3(
    app: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every command that reaches an unreachable store exits 3 with one line on stderr."""
    monkeypatch.setenv("GAESIGNALS_SECRET_KEY", SECRET)
    down = f"memcached://127.0.0.1:{free_port()}"
    for argv in (
        ["deliver", "cliapp:mapping"],
        ["worker", "--once", "cliapp:mapping"],
        ["send", "a", "--data", "{}"],
        ["dead-letters", "a"],
        ["dead-letters", "a", "--purge"],
    ):
        code, out, err = run(capsys, "--store", down, *argv)
        assert (code, out, err.count("\n")) == (3, "", 1), argv
        assert error_line(err).startswith("gaesignals: error: store unavailable: memcached at")


# -- the process-local store ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["send", "a", "--data", "1"],
        ["pending", "a"],
        ["deliver", "cliapp:mapping"],
        ["worker", "--once", "cliapp:mapping"],
        ["dead-letters", "a"],
    ],
)
@pytest.mark.parametrize("store", [None, "memory://"])
def test_a_command_on_the_process_local_store_warns(
    app: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch, argv: list[str], store: str | None
) -> None:
    """A command whose store is the embedded one (the default with no GAESIGNALS_STORE, or
    --store memory://) still runs, and says on stderr that no other process sees its work."""
    gaesignals.config.reset()
    before = ["--store", store] if store else []
    code, _, err = run(capsys, *before, *argv)
    assert code == 0, err
    assert err.count("gaesignals: warning: the store is the embedded in-process one") == 1
    assert "set GAESIGNALS_STORE or --store" in err


def test_no_warning_on_a_shared_store_or_a_store_the_caller_configured(
    app: Path, memcached_url: str, capsys: Any
) -> None:
    """A shared store (memcached here) earns no warning, nor does a memory store that the
    program calling main() in-process configured itself (it shares that store)."""
    assert run(capsys, "--store", memcached_url, "send", "a", "-q") == (0, "", "")
    code, out, err = run(capsys, "--store", memcached_url, "pending", "a")
    assert (code, out.splitlines()[1].split()[:2], err) == (0, ["a", "1"], "")
    gaesignals.configure(store=MemoryStore())
    assert run(capsys, "send", "a") == (0, "sent 1 payload to 'a'\n", "")
    assert run(capsys, "deliver", "cliapp:mapping") == (0, "delivered 1 payload(s)\n", "")


def test_store_help_lists_every_kind_of_store(capsys: Any) -> None:
    """--store's help names each store URL the library accepts."""
    code, out, _ = run(capsys, "send", "--help")
    assert code == 0
    flat = " ".join(out.split())
    for kind in (
        "memory://",
        "appengine://",
        "memcached://host:port[,host:port...]",
        "redis://[[user]:password@]host[:port][/db]",
        "rediss://",
        "valkey://",
        "valkeys://",
        "unix:///path/to/redis.sock",
        "?cluster=true",
    ):
        assert kind in flat, kind


def test_console_script_is_declared() -> None:
    """pyproject declares the `gaesignals` console script, and it names main()."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    module, _, attr = project["scripts"]["gaesignals"].partition(":")
    assert (module, attr) == ("gaesignals.cli", "main")
    assert getattr(cli, attr) is main

"""The ``gaesignals pending`` command: its table and JSON, with or without names, on a store
that is down.

In-process, through ``main()``; the worker's real processes are in test_cli_worker.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import pytest

import gaesignals
from gaesignals import deliver, send
from gaesignals.stores.memory import MemoryStore
from gaesignals.testing import DownStore

from . import cli_support as support
from .cli_support import error_line, run

app = support.app


# -- pending --------------------------------------------------------------------------------------


class FakePending(NamedTuple):
    count: int
    bytes: int
    oldest_age: float | None
    waiting: int = 0
    next_due: float | None = None
    debounced: int = 0


def test_pending_table_and_json(
    app: Path, memory: MemoryStore, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pending prints each named signal's count, bytes, payloads waiting for a delay and
    oldest age, from gaesignals.pending(names) (faked here), once per name, in the order
    given."""
    asked: list[list[str]] = []

    def fake(names: list[str]) -> dict[str, FakePending]:
        asked.append(list(names))
        return {
            "audit": FakePending(3, 150, 12.34, 1, 1_800_000_000.5),
            "user_7_notice": FakePending(0, 0, None),
        }

    monkeypatch.setattr("gaesignals.cli.commands.pending", fake)
    code, out, err = run(capsys, "pending", "user_7_notice", "audit", "audit")
    assert (code, err) == (0, "")
    assert asked == [["user_7_notice", "audit"]]
    assert out.splitlines() == [
        "signal          pending       bytes   waiting  oldest",
        "user_7_notice         0           0         0  -",
        "audit                 3         150         1  12.3s",
    ]
    code, out, _ = run(capsys, "pending", "audit", "user_7_notice", "--json")
    assert json.loads(out) == {
        "audit": {
            "count": 3,
            "bytes": 150,
            "oldest_age": 12.34,
            "waiting": 1,
            "next_due": 1_800_000_000.5,
            "debounced": 0,
        },
        "user_7_notice": {
            "count": 0,
            "bytes": 0,
            "oldest_age": None,
            "waiting": 0,
            "next_due": None,
            "debounced": 0,
        },
    }
    assert list(json.loads(out)) == ["audit", "user_7_notice"]
    code, _, err = run(capsys, "pending")  # no name, and nothing registered to list
    assert code == 2 and "name the signals" in error_line(err)


def test_pending_with_the_library_function(app: Path, memory: MemoryStore, capsys: Any) -> None:
    """With the real gaesignals.pending, the command shows what was sent and not delivered."""
    send("a", 1)
    send("a", [2])
    code, out, err = run(capsys, "pending", "a", "b", "--json")
    assert (code, err) == (0, "")
    shown = json.loads(out)
    empty = {"count": 0, "bytes": 0, "oldest_age": None, "waiting": 0, "next_due": None}
    empty["debounced"] = 0
    assert (shown["a"]["count"], shown["b"]) == (2, empty)
    assert shown["a"]["bytes"] > 0 and shown["a"]["oldest_age"] >= 0
    assert run(capsys, "pending", "a")[1].splitlines()[1].split()[:3] == [
        "a",
        "2",
        str(shown["a"]["bytes"]),
    ]


def test_pending_without_names_lists_the_signals_with_payloads(
    app: Path, memory: MemoryStore, capsys: Any
) -> None:
    """With no name, pending lists the signals that have payloads pending among those of
    --app (a mapping, or a module's receivers) or --autodiscover, as the dashboard reads
    them; with none pending it says so in one line (none with -q); --json gives the rows."""
    send("a", 1)
    send("a", 2)
    code, out, err = run(capsys, "pending", "--app", "cliapp:mapping")  # signals a and b
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["signal", "pending", "bytes", "waiting", "oldest"]
    assert [line.split()[:2] for line in lines[1:]] == [["a", "2"]]
    listed = json.loads(run(capsys, "pending", "--app", "cliapp:mapping", "--json")[1])
    assert list(listed) == ["a"] and listed["a"]["count"] == 2
    out = run(capsys, "pending", "--app", "cliapp_receivers")[1]  # its receiver of "a"
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [["a", "2"]]
    assert deliver({"a": lambda data: None}) == 2
    code, out, _ = run(capsys, "pending", "--autodiscover", "cliapp_pkg")
    assert (code, out) == (0, "nothing pending in 2 signal(s): 'a', 'c'\n")
    assert run(capsys, "pending", "--autodiscover", "cliapp_pkg", "-q") == (0, "", "")
    assert run(capsys, "pending", "--autodiscover", "cliapp_pkg", "--json")[1] == "{}\n"


def test_pending_without_names_on_a_store_that_is_down(app: Path, capsys: Any) -> None:
    """Listing on a store that cannot be reached is one line and exit 3, as every command."""
    gaesignals.configure(store=DownStore())
    code, out, err = run(capsys, "pending", "--app", "cliapp:mapping")
    assert (code, out) == (3, "")
    assert error_line(err).startswith("gaesignals: error: store unavailable")

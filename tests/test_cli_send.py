"""The ``gaesignals send`` command: JSON from an option, a file or stdin, its refusals, and library
errors shown by their str() alone.

In-process, through ``main()``; the worker's real processes are in test_cli_worker.py."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

import gaesignals
from gaesignals import deliver
from gaesignals.stores.memory import MemoryStore

from . import cli_support as support
from .cli_support import error_line, run

app = support.app


# -- send -----------------------------------------------------------------------------------------


def test_send_json_from_option_file_or_stdin(
    app: Path, memory: MemoryStore, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """send parses --data, --data-file PATH or stdin as JSON and confirms in one line (none
    with -q); no data sends null."""
    (app / "payload.json").write_text('{"from": "file"}')
    monkeypatch.setattr(sys, "stdin", io.StringIO('["from", "stdin"]'))
    sent = "sent 1 payload to 's'\n"
    assert run(capsys, "send", "s", "--data", '{"n": 1}') == (0, sent, "")
    assert run(capsys, "send", "s", "--data-file", "payload.json", "-q") == (0, "", "")
    assert run(capsys, "send", "s", "--data-file", "-", "-v") == (0, sent, "")
    assert run(capsys, "--quiet", "send", "s") == (0, "", "")
    received: list[Any] = []
    assert deliver({"s": received.append}) == 4
    assert received == [{"n": 1}, {"from": "file"}, ["from", "stdin"], None]


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["s", "--data", "{'n': 1}"], 2, "invalid JSON in --data: Expecting property name"),
        (["s", "--data", ""], 2, "invalid JSON in --data"),
        (["s", "--data-file", "missing.json"], 2, "cannot read --data-file"),
        (["s", "--data-file", "bad.json"], 2, "invalid JSON in bad.json"),
        (["", "--data", "1"], 2, "a signal name must not be blank"),
        (["s", "--data", json.dumps("x" * 2_000_000)], 1, "PayloadTooLarge"),
    ],
)
def test_send_errors(
    app: Path, memory: MemoryStore, capsys: Any, argv: list[str], code: int, message: str
) -> None:
    """Bad JSON, an unreadable file or a bad name exit 2; a payload the store cannot take
    exits 1 naming its error; nothing is sent."""
    (app / "bad.json").write_text("{")
    result, out, err = run(capsys, "send", *argv)
    assert (result, out) == (code, "")
    assert message in error_line(err)
    assert deliver({"s": print}) == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["send", "   "],
        ["send", "", "--data", "1"],
        ["pending", "a", " \t"],
        ["dead-letters", "  "],
        ["dead-letters", " ", "--purge"],
    ],
)
def test_blank_names_are_refused(
    app: Path, memory: MemoryStore, capsys: Any, argv: list[str]
) -> None:
    """A name of nothing but spaces (a quoting slip in a shell) exits 2 with one line naming
    it, and nothing is sent."""
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert "a signal name must not be blank, got " in error_line(err)
    for name in ("   ", " \t", "  ", " "):
        assert gaesignals.pending([name])[name].count == 0


class Full(gaesignals.QueueFull):
    """A library error that keeps its data as an attribute and in its args, as QueueFull
    does, with a str() that reads as a sentence."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__("full", keys)
        self.keys = keys

    def __str__(self) -> str:
        return f"{', '.join(self.keys)} cannot take more; deliver first"


class Flaky(gaesignals.StoreUnavailable):
    def __init__(self, server: str) -> None:
        super().__init__(server, 11211)

    def __str__(self) -> str:
        return f"memcached at {self.args[0]} timed out"


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (Full(["a", "b"]), 1, "Full: a, b cannot take more; deliver first"),
        (Flaky("10.0.0.1"), 3, "store unavailable (Flaky): memcached at 10.0.0.1 timed out"),
    ],
)
def test_library_errors_show_their_str_only(
    app: Path,
    memory: MemoryStore,
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    code: int,
    line: str,
) -> None:
    """A library error is shown by its str(), never by the data in its args."""

    def failing(name: str, data: Any, **options: Any) -> None:
        raise error

    monkeypatch.setattr("gaesignals.cli.commands.send", failing)
    result, out, err = run(capsys, "send", "a")
    assert (result, out) == (code, "")
    assert error_line(err) == f"gaesignals: error: {line}"


def test_send_and_data_file_exclude_each_other(app: Path, capsys: Any) -> None:
    """--data and --data-file cannot both be given."""
    assert run(capsys, "send", "s", "--data", "1", "--data-file", "-")[0] == 2

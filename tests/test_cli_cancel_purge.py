"""The ``gaesignals cancel NAME ID`` and ``gaesignals purge NAME`` commands, and ``send``'s
``--coalesce`` and ``--json``: their output, ``-q``, ``--json`` and exit codes.

In-process, through ``main()``, as the other command suites."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import gaesignals
from gaesignals import deliver, stats
from gaesignals.stores.memory import MemoryStore
from gaesignals.testing import DownStore

from . import cli_support as support
from .cli_support import error_line, run

app = support.app


def test_send_prints_the_id_that_cancel_takes(app: Path, memory: MemoryStore, capsys: Any) -> None:
    """``send --json`` prints the payload's id; ``cancel NAME ID`` cancels it (one line, none
    with -q, JSON with --json), and no delivery runs it."""
    code, out, _ = run(capsys, "send", "s", "--data", "1", "--json")
    assert code == 0
    sent = json.loads(out)
    assert sent["sent"] == 1
    code, out, err = run(capsys, "cancel", "s", sent["id"])
    assert (code, err) == (0, "")
    assert out == f"cancelled (if still pending, no handler will get it): 's' {sent['id']}\n"
    assert run(capsys, "cancel", "s", sent["id"], "-q") == (0, "", "")
    code, out, _ = run(capsys, "cancel", "s", sent["id"], "--json")
    assert (code, json.loads(out)) == (0, {"cancel": "cancelled"})
    received: list[Any] = []
    assert deliver({"s": received.append}) == 0 and received == []


def test_send_coalesce_keys_the_payload(app: Path, memory: MemoryStore, capsys: Any) -> None:
    """``send --coalesce KEY``: of the payloads sent with one key, a delivery runs the newest."""
    for n in (1, 2, 3):
        assert run(capsys, "send", "s", "--data", str(n), "--coalesce", "k", "-q")[0] == 0
    received: list[Any] = []
    deliver({"s": received.append})
    assert received == [3] and stats("s")["s"]["coalesced"] == 2


def test_purge_drops_the_pending_payloads(app: Path, memory: MemoryStore, capsys: Any) -> None:
    """``purge NAME`` drops every pending payload and says how many (nothing with -q, the
    count as JSON with --json); they count as purged."""
    for n in range(3):
        gaesignals.send("p", n)
    assert run(capsys, "purge", "p") == (0, "purged 3 pending payload(s) of 'p'\n", "")
    assert gaesignals.pending("p")["p"].count == 0 and stats("p")["p"]["purged"] == 3
    gaesignals.send("p", 9)
    assert run(capsys, "purge", "p", "-q") == (0, "", "")
    code, out, _ = run(capsys, "purge", "p", "--json")
    assert (code, json.loads(out)) == (0, {"purged": 0})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["cancel", "s", "not-an-id"], "'not-an-id' is not a payload id"),
        (["cancel", " ", "0123456789abcdef.0"], "a signal name must not be blank"),
        (["purge", "  "], "a signal name must not be blank"),
        (["send", "s", "--coalesce", "k" * 256], "a coalesce key must be at most 255 bytes"),
    ],
)
def test_bad_input_exits_2(
    app: Path, memory: MemoryStore, capsys: Any, argv: list[str], message: str
) -> None:
    """A bad payload id, a blank name or a coalesce key too long exits 2 with one line, and
    nothing is written."""
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert message in error_line(err)
    assert gaesignals.pending("s")["s"].bytes == 0


@pytest.mark.parametrize("argv", [["purge", "p"], ["cancel", "p", "0123456789abcdef.0"]])
def test_a_store_that_is_down_exits_3(app: Path, capsys: Any, argv: list[str]) -> None:
    """With the store down, cancel and purge exit 3 with one line."""
    gaesignals.configure(store=DownStore())
    code, out, err = run(capsys, *argv)
    assert (code, out) == (3, "")
    assert error_line(err).startswith("gaesignals: error: store unavailable")

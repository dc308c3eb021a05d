"""The ``gaesignals deliver`` and ``dead-letters`` commands: the mapping forms, the counts they
print, dead letters, the one line and exit code of each failure, and printed data escaped so it
cannot drive the terminal.

In-process, through ``main()``; the worker's real processes are in test_cli_worker.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

import gaesignals
from gaesignals import deliver, send
from gaesignals.stores.memory import MemoryStore

from . import cli_support as support
from .cli_support import error_line, got, run

app = support.app


# -- deliver --------------------------------------------------------------------------------------


def test_deliver_prints_the_count(app: Path, memory: MemoryStore, capsys: Any) -> None:
    """`deliver pkg.mod:attr` imports the mapping from the current directory, delivers it once
    and prints how many payloads it delivered; -v adds per-signal counts, --json both."""
    for name, data in [("a", 1), ("b", 2), ("a", 3), ("other", 4)]:
        send(name, data)
    assert run(capsys, "deliver", "cliapp:mapping") == (0, "delivered 3 payload(s)\n", "")
    assert sorted(got()) == [1, 2, 3]
    send("a", 5)
    send("a", 6)
    code, out, _ = run(capsys, "deliver", "cliapp:mapping", "-v")
    assert (code, out) == (0, "delivered 2 payload(s)\n  a: 2\n  b: 0\n")
    send("b", 7)
    code, out, _ = run(capsys, "deliver", "cliapp:mapping", "--json")
    assert json.loads(out) == {"delivered": 1, "signals": {"b": 1}}
    assert run(capsys, "deliver", "cliapp:mapping", "--json")[1] == (
        '{"delivered": 0, "signals": {}}\n'
    )


def test_deliver_limit_bounds_each_signal(app: Path, memory: MemoryStore, capsys: Any) -> None:
    """`deliver --limit 2` delivers the 2 oldest payloads of each signal; a limit of 0 is a
    usage error (exit 2) that delivers nothing."""
    for data in range(5):
        send("a", data)
    assert run(capsys, "deliver", "cliapp:mapping", "--limit", "0")[0] == 2
    assert run(capsys, "deliver", "cliapp:mapping", "--limit", "2")[:2] == (
        0,
        "delivered 2 payload(s)\n",
    )
    assert got() == [0, 1]


def test_every_form_of_mapping(app: Path, memory: MemoryStore, capsys: Any) -> None:
    """A list of pairs, a callable returning a dict, a module's registered receivers, and
    --autodiscover packages all name something to deliver."""
    cases: list[tuple[list[str], dict[str, int]]] = [
        (["cliapp:pairs"], {"a": 1}),
        (["cliapp:make"], {"a": 1}),
        (["cliapp_receivers"], {"a": 1}),
        (["--autodiscover", "cliapp_pkg,cliapp_nothing", "--weak"], {"c": 1}),
        (["cliapp_receivers", "--autodiscover", "cliapp_pkg"], {"a": 1, "c": 1}),
    ]
    for argv, expected in cases:
        gaesignals.registry.clear()
        for name in ("cliapp_receivers", "cliapp_pkg.signals"):
            sys.modules.pop(name, None)
        send("a", argv[0])
        send("c", argv[0])
        code, out, err = run(capsys, "deliver", *argv, "--json")
        assert code == 0, err
        assert json.loads(out)["signals"] == expected, argv
        deliver({"a": print, "c": print})  # leave nothing behind for the next form
        capsys.readouterr()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["cliapp_missing:mapping"], "cannot import 'cliapp_missing': No module named"),
        (["cliapp.sub:mapping"], "cannot import 'cliapp.sub': No module named 'cliapp.sub'"),
        (["cliapp:nope"], "module 'cliapp' has no attribute 'nope'"),
        (["cliapp:not_a_mapping"], "cliapp:not_a_mapping is not a signal mapping"),
        (["cliapp:nothing"], "cliapp:nothing is None, not a signal mapping"),
        (["cliapp:empty"], "cliapp:empty maps no signals"),
        (["cliapp_nothing"], "cliapp_nothing registered no receivers"),
        (["cliapp_broken:x"], "error importing cliapp_broken: ModuleNotFoundError: No module"),
        (["--autodiscover", "cliapp_nope"], "error importing --autodiscover cliapp_nope"),
        (["cliapp:explode"], "error calling cliapp:explode(): RuntimeError: no mapping today"),
        ([":mapping"], "':mapping' is not an import path"),
        ([], "name a mapping (pkg.mod:attr or pkg.mod) or --autodiscover PKG"),
    ],
)
def test_bad_import_path_is_one_line_and_exit_2(
    app: Path, memory: MemoryStore, capsys: Any, argv: list[str], message: str
) -> None:
    """A path that names no mapping is one clear line on stderr and exit code 2, for the
    worker as for deliver."""
    for command in ("deliver", "worker"):
        code, out, err = run(capsys, command, *argv)
        assert (code, out) == (2, "")
        assert message in error_line(err)


def test_verbose_shows_the_traceback_of_a_broken_module(
    app: Path, memory: MemoryStore, capsys: Any
) -> None:
    """-v adds the traceback of the error inside the user's module, then the one line."""
    code, _, err = run(capsys, "deliver", "cliapp_broken:x", "-v")
    assert code == 2
    assert "Traceback" in err and err.splitlines()[-1].startswith("gaesignals: error: ")


#: How the listing says why a payload of cliapp:failing died.
WHY = "  # 1 attempt(s): RuntimeError: boom (cliapp.py:15 in fail)"


def test_reliable_deliver_dead_letters(app: Path, memory: MemoryStore, capsys: Any) -> None:
    """--reliable --max-attempts 1 moves a failing payload to the dead letters (the handler's
    error is logged on stderr); dead-letters lists them with why they died, requeues and
    purges them."""
    send("f", {"n": 1})
    code, out, err = run(capsys, "deliver", "cliapp:failing", "--reliable", "--max-attempts", "1")
    assert (code, out) == (0, "delivered 0 payload(s)\n")
    assert "boom" in err and "dead letters" in err
    assert run(capsys, "dead-letters", "f") == (0, f"{{'n': 1}}{WHY}\n", "")
    assert run(capsys, "dead-letters", "f", "--json") == (0, '[{"n": 1}]\n', "")
    assert run(capsys, "dead-letters", "f", "--requeue") == (0, "requeued 1 dead letter(s)\n", "")
    assert run(capsys, "dead-letters", "f") == (0, "", "no dead letters for 'f'\n")
    assert run(capsys, "dead-letters", "f", "--quiet") == (0, "", "")
    send("f", (1, 2))
    run(capsys, "deliver", "cliapp:failing", "--reliable", "--max-attempts", "1", "--lease", "5")
    assert run(capsys, "dead-letters", "f")[1] == f"{{'n': 1}}{WHY}\n(1, 2){WHY}\n"
    assert run(capsys, "dead-letters", "f", "--purge", "--json") == (0, '{"purged": 2}\n', "")
    assert gaesignals.dead_letters("f") == []


def test_dead_letters_that_are_not_json(app: Path, memory: MemoryStore, capsys: Any) -> None:
    """--json refuses dead letters JSON cannot show (exit 1); the repr listing still works."""
    send("f", {1, 2})
    run(capsys, "deliver", "cliapp:failing", "--reliable", "--max-attempts", "1")
    code, out, err = run(capsys, "dead-letters", "f", "--json")
    assert (code, out) == (1, "")
    assert "not JSON-serialisable" in error_line(err)
    assert run(capsys, "dead-letters", "f")[1] == f"{{1, 2}}{WHY}\n"
    assert run(capsys, "dead-letters", "f", "--requeue", "--purge")[0] == 2


def test_per_signal_counts_follow_deliver(app: Path, memory: MemoryStore, capsys: Any) -> None:
    """A payload counts for its signal only if every handler took it, as deliver's total does;
    a handler that wants the signal's name still gets it."""
    send("ok", 1)
    send("half", 2)
    send("ok", 3)
    _, out, err = run(capsys, "deliver", "cliapp:mixed", "--json")
    assert json.loads(out) == {"delivered": 2, "signals": {"ok": 2}}
    assert got() == [1, ("ok", 1), 3, ("ok", 3), 2]
    assert "handler <function fail" in err  # the log names the user's handler, not a wrapper


def test_delivery_options_are_checked(app: Path, memory: MemoryStore, capsys: Any) -> None:
    """Out-of-range leases, attempts and intervals, and both modes at once, exit 2."""
    for argv in (
        ["--lease", "0"],
        ["--max-attempts", "0"],
        ["--reliable", "--weak"],
        ["--interval", "0"],
        ["--interval", "soon"],
        ["--json"],
    ):
        command = "worker" if argv[0] in ("--interval", "--json") else "deliver"
        code, out, err = run(capsys, command, "cliapp:mapping", *argv)
        assert (code, out) == (2, ""), argv
        assert "error:" in err.splitlines()[-1]


#: What a payload, a handler's error or a planted cache value can hold: a window title, a
#: clear screen, a colour, and a line break that fakes a line of output.
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x1b[31m\ngaesignals: delivered 99 payload(s)\u202e"

EVIL_APP = f"""
HOSTILE = {HOSTILE!r}

def fail(data):
    raise RuntimeError("cannot take " + data)

mapping = {{HOSTILE: fail}}
"""


def test_printed_data_cannot_drive_the_terminal(
    app: Path, memory: MemoryStore, capsys: Any
) -> None:
    """Signal names, payloads and handlers' errors are printed with their control characters
    escaped, by deliver -v, its log lines, dead-letters, pending and error lines alike."""
    (app / "cliapp_evil.py").write_text(EVIL_APP)
    (app / "cliapp_evil_broken.py").write_text("from cliapp_evil import *\nfail(HOSTILE)\n")
    send(HOSTILE, HOSTILE)
    outputs = [run(capsys, "deliver", "cliapp_evil:mapping", "--reliable", "--max-attempts", "1")]
    outputs.append(run(capsys, "deliver", "cliapp_evil:mapping", "-v"))
    outputs.append(run(capsys, "dead-letters", HOSTILE))
    outputs.append(run(capsys, "pending", HOSTILE))
    outputs.append(run(capsys, "deliver", "cliapp_evil_broken"))
    for _, out, err in outputs:
        for text in (out, err):
            assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
            assert "\ngaesignals: delivered 99" not in text
    _, _, err = outputs[0]
    assert "cannot take \\x1b]0;pwned\\x07" in err  # the log line, escaped
    _, out, _ = outputs[2]
    assert len(out.splitlines()) == 1  # one dead letter, one line
    assert "\\x1b[2J" in out and "\\ngaesignals: delivered 99" in out
    assert "\\x1b[31m" in outputs[1][1]  # -v's per-signal line names the signal, escaped
    assert outputs[4][0] == 2 and "\\x1b]0;pwned" in error_line(outputs[4][2])

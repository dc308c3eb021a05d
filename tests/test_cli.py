"""The ``gaesignals`` command line in-process, through ``main()``: the commands, the settings
options, and the one line and exit code of each failure. The worker's real processes are in
test_cli_worker.py."""

from __future__ import annotations

import io
import json
import sys
import tomllib
from pathlib import Path
from typing import Any, NamedTuple

import pytest

import gaesignals
from gaesignals import cli, deliver, send
from gaesignals.cli import main
from gaesignals.stores.memory import MemoryStore
from gaesignals.testing import DownStore, free_port

from . import cli_support as support
from .cli_support import ROOT, SECRET, error_line, got, run

app = support.app
memory = support.memory
memcached_url = support.memcached_url


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

    def failing(name: str, data: Any) -> None:
        raise error

    monkeypatch.setattr("gaesignals.cli.commands.send", failing)
    result, out, err = run(capsys, "send", "a")
    assert (result, out) == (code, "")
    assert error_line(err) == f"gaesignals: error: {line}"


def test_send_and_data_file_exclude_each_other(app: Path, capsys: Any) -> None:
    """--data and --data-file cannot both be given."""
    assert run(capsys, "send", "s", "--data", "1", "--data-file", "-")[0] == 2


# -- pending --------------------------------------------------------------------------------------


class FakePending(NamedTuple):
    count: int
    bytes: int
    oldest_age: float | None
    waiting: int = 0
    next_due: float | None = None


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
        },
        "user_7_notice": {
            "count": 0,
            "bytes": 0,
            "oldest_age": None,
            "waiting": 0,
            "next_due": None,
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


def test_console_script_is_declared() -> None:
    """pyproject declares the `gaesignals` console script, and it names main()."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    module, _, attr = project["scripts"]["gaesignals"].partition(":")
    assert (module, attr) == ("gaesignals.cli", "main")
    assert getattr(cli, attr) is main

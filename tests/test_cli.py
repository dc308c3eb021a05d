"""The ``gaesignals`` command line: in-process through ``main()``, and as a real process for the
worker (signals, outages) and exit codes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

import gaesignals
from gaesignals import cli, deliver, send
from gaesignals.cli import main
from gaesignals.stores.memcached import MemcachedStore
from gaesignals.stores.memory import MemoryStore
from gaesignals.testing import MemcachedServer, free_port

ROOT = Path(gaesignals.__file__).resolve().parent.parent
SECRET = "k" * 40

APP = """
import json, os, time
from pathlib import Path
from gaesignals import SignalMapping, pass_signal_name

got = []

def record(data):
    got.append(data)
    if os.environ.get("CLIAPP_LOG"):
        with open(os.environ["CLIAPP_LOG"], "a") as log:
            log.write(json.dumps(data) + "\\n")

def fail(data):
    raise RuntimeError("boom")

@pass_signal_name
def named(data, signal_name):
    got.append((signal_name, data))

def slow(data):
    # Tells the test it started, then waits (bounded) for the test to let it finish.
    Path("started").touch()
    deadline = time.monotonic() + 20
    while not Path("go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    record(data)

mapping = SignalMapping([("a", record), ("b", record)])
pairs = [("a", record)]
failing = {"f": fail}
mixed = {"ok": [record, named], "half": [record, fail]}
slow_mapping = {"slow": slow}

def make():
    return {"a": record}

def explode():
    raise RuntimeError("no mapping today")

not_a_mapping = 42
nothing = None
empty = {}
"""

RECEIVERS = """
from gaesignals import receiver
from cliapp import record

@receiver("a")
def on_a(data):
    record(data)
"""


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project directory, made the current one, with modules the CLI can name."""
    (tmp_path / "cliapp.py").write_text(APP)
    (tmp_path / "cliapp_receivers.py").write_text(RECEIVERS)
    (tmp_path / "cliapp_nothing.py").write_text("")
    (tmp_path / "cliapp_broken.py").write_text("import cliapp_no_such_dependency\n")
    (tmp_path / "cliapp_pkg").mkdir()
    (tmp_path / "cliapp_pkg" / "__init__.py").write_text("")
    (tmp_path / "cliapp_pkg" / "signals.py").write_text(
        "from gaesignals import connect\nfrom cliapp import record\nconnect('c', record)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # main() adds the current directory
    for name in list(os.environ):
        if name.startswith("GAESIGNALS_"):
            monkeypatch.delenv(name)
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("cliapp")]:
        del sys.modules[name]


@pytest.fixture
def memory() -> MemoryStore:
    """A memory store configured for this test, which every main() call in it shares."""
    store = MemoryStore()
    gaesignals.configure(store=store)
    return store


@pytest.fixture
def memcached_url(
    memcached_server: MemcachedServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A flushed real memcached, configured (with a secret key) for the test's own sends."""
    memcached_server.flush()
    monkeypatch.setenv("GAESIGNALS_SECRET_KEY", SECRET)
    store = MemcachedStore.from_url(memcached_server.url)
    gaesignals.configure(store=store)
    yield memcached_server.url
    store.close()


def got() -> list[Any]:
    result: list[Any] = sys.modules["cliapp"].got
    return result


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    """The one line a failure writes (after any log lines the library wrote before it)."""
    lines = err.splitlines()
    assert lines, "nothing on stderr"
    assert lines[-1].startswith("gaesignals: error: "), err
    assert sum(line.startswith("gaesignals: error: ") for line in lines) == 1, err
    assert "Traceback" not in err
    return lines[-1]


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


def test_reliable_deliver_dead_letters(app: Path, memory: MemoryStore, capsys: Any) -> None:
    """--reliable --max-attempts 1 moves a failing payload to the dead letters (the handler's
    error is logged on stderr); dead-letters lists, requeues and purges them."""
    send("f", {"n": 1})
    code, out, err = run(capsys, "deliver", "cliapp:failing", "--reliable", "--max-attempts", "1")
    assert (code, out) == (0, "delivered 0 payload(s)\n")
    assert "boom" in err and "dead letters" in err
    assert run(capsys, "dead-letters", "f") == (0, "{'n': 1}\n", "")
    assert run(capsys, "dead-letters", "f", "--json") == (0, '[{"n": 1}]\n', "")
    assert run(capsys, "dead-letters", "f", "--requeue") == (0, "requeued 1 dead letter(s)\n", "")
    assert run(capsys, "dead-letters", "f") == (0, "", "")
    send("f", (1, 2))
    run(capsys, "deliver", "cliapp:failing", "--reliable", "--max-attempts", "1", "--lease", "5")
    assert run(capsys, "dead-letters", "f")[1] == "{'n': 1}\n(1, 2)\n"
    assert run(capsys, "dead-letters", "f", "--purge", "--json") == (0, '{"purged": 2}\n', "")
    assert gaesignals.dead_letters("f") == []


def test_dead_letters_that_are_not_json(app: Path, memory: MemoryStore, capsys: Any) -> None:
    """--json refuses dead letters JSON cannot show (exit 1); the repr listing still works."""
    send("f", {1, 2})
    run(capsys, "deliver", "cliapp:failing", "--reliable", "--max-attempts", "1")
    code, out, err = run(capsys, "dead-letters", "f", "--json")
    assert (code, out) == (1, "")
    assert "not JSON-serialisable" in error_line(err)
    assert run(capsys, "dead-letters", "f")[1] == "{1, 2}\n"
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
        "",
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
    """send parses --data, --data-file PATH or stdin as JSON and prints nothing (or "sent"
    with -v); no data sends null."""
    (app / "payload.json").write_text('{"from": "file"}')
    monkeypatch.setattr(sys, "stdin", io.StringIO('["from", "stdin"]'))
    assert run(capsys, "send", "s", "--data", '{"n": 1}') == (0, "", "")
    assert run(capsys, "send", "s", "--data-file", "payload.json") == (0, "", "")
    assert run(capsys, "send", "s", "--data-file", "-", "-v") == (0, "sent\n", "")
    assert run(capsys, "send", "s") == (0, "", "")
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
        (["", "--data", "1"], 2, "a signal name must not be empty"),
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


def test_send_and_data_file_exclude_each_other(app: Path, capsys: Any) -> None:
    """--data and --data-file cannot both be given."""
    assert run(capsys, "send", "s", "--data", "1", "--data-file", "-")[0] == 2


# -- pending --------------------------------------------------------------------------------------


class FakePending(NamedTuple):
    count: int
    bytes: int
    oldest_age: float | None


def test_pending_table_and_json(
    app: Path, memory: MemoryStore, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pending prints each named signal's count, bytes and oldest age, from
    gaesignals.pending(names) (faked here), once per name, in the order given."""
    asked: list[list[str]] = []

    def fake(names: list[str]) -> dict[str, FakePending]:
        asked.append(list(names))
        return {
            "audit": FakePending(3, 150, 12.34),
            "user_7_notice": FakePending(0, 0, None),
        }

    monkeypatch.setattr("gaesignals.cli.commands.pending", fake)
    code, out, err = run(capsys, "pending", "user_7_notice", "audit", "audit")
    assert (code, err) == (0, "")
    assert asked == [["user_7_notice", "audit"]]
    assert out.splitlines() == [
        "signal          pending       bytes  oldest",
        "user_7_notice         0           0  -",
        "audit                 3         150  12.3s",
    ]
    code, out, _ = run(capsys, "pending", "audit", "user_7_notice", "--json")
    assert json.loads(out) == {
        "audit": {"count": 3, "bytes": 150, "oldest_age": 12.34},
        "user_7_notice": {"count": 0, "bytes": 0, "oldest_age": None},
    }
    assert list(json.loads(out)) == ["audit", "user_7_notice"]
    assert run(capsys, "pending")[0] == 2  # at least one name


def test_pending_with_the_library_function(app: Path, memory: MemoryStore, capsys: Any) -> None:
    """With the real gaesignals.pending, the command shows what was sent and not delivered."""
    send("a", 1)
    send("a", [2])
    code, out, err = run(capsys, "pending", "a", "b", "--json")
    assert (code, err) == (0, "")
    shown = json.loads(out)
    assert (shown["a"]["count"], shown["b"]) == (2, {"count": 0, "bytes": 0, "oldest_age": None})
    assert shown["a"]["bytes"] > 0 and shown["a"]["oldest_age"] >= 0
    assert run(capsys, "pending", "a")[1].splitlines()[1].split()[:3] == [
        "a",
        "2",
        str(shown["a"]["bytes"]),
    ]


# -- real processes -------------------------------------------------------------------------------


class Process:
    """A ``python -m gaesignals`` process whose output lines are collected as they come."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "gaesignals", *argv],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: dict[str, list[str]] = {"out": [], "err": []}
        self.changed: queue.Queue[None] = queue.Queue()
        self.readers = [
            threading.Thread(target=self._read, args=(stream, which), daemon=True)
            for stream, which in ((self.popen.stdout, "out"), (self.popen.stderr, "err"))
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, stream: Any, which: str) -> None:
        for line in stream:
            self.lines[which].append(line.rstrip("\n"))
            self.changed.put(None)
        self.changed.put(None)

    def wait_for(self, which: str, test: Callable[[str], bool], timeout: float = 20) -> str:
        """The first line of ``which`` output passing ``test``, waiting for it (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines[which]:
                if test(line):
                    return line
            left = deadline - time.monotonic()
            if left <= 0 or (self.popen.poll() is not None and self.changed.empty()):
                raise AssertionError(f"no such line in {which}: {self.lines}")
            with contextlib.suppress(queue.Empty):
                self.changed.get(timeout=min(left, 0.5))

    def finish(self, timeout: float = 20) -> int:
        code = self.popen.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=timeout)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()
        return code

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.finish()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAESIGNALS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["GAESIGNALS_SECRET_KEY"] = SECRET
    env.update(extra)
    return env


@pytest.fixture
def process(app: Path) -> Iterator[Callable[..., Process]]:
    started: list[Process] = []

    def start(*argv: str, **env: str) -> Process:
        started.append(Process(list(argv), app, _env(**env)))
        return started[-1]

    yield start
    for each in started:
        each.stop()


def _total(line: str) -> int:
    found = re.search(r"; (\d+) in total$", line)
    return int(found.group(1)) if found else -1


def test_worker_delivers_until_sigterm(
    app: Path,
    process: Callable[..., Process],
    memcached_url: str,
) -> None:
    """The worker delivers what is sent while it runs, says so line by line with a running
    total, and on SIGTERM prints a summary and exits 0."""
    log = app / "delivered.log"
    worker = process(
        "--store", memcached_url, "worker", "cliapp:mapping", "--interval", "0.05",
        CLIAPP_LOG=str(log),
    )  # fmt: skip
    worker.wait_for("out", lambda line: "worker: delivering 2 signal(s) (a, b)" in line)
    for n in range(3):
        send("a", n)
    send("b", "x")
    send("b", "y")
    worker.wait_for("out", lambda line: _total(line) == 5)
    worker.popen.send_signal(signal.SIGTERM)
    assert worker.finish() == 0
    summary = worker.lines["out"][-1]
    assert "worker stopped by SIGTERM: delivered 5 payload(s) (a=3, b=2)" in summary
    assert "0 store outage(s)" in summary
    assert sorted(log.read_text().splitlines()) == ['"x"', '"y"', "0", "1", "2"]
    assert deliver({"a": print, "b": print}) == 0


def test_worker_finishes_the_current_delivery_on_sigterm(
    app: Path,
    process: Callable[..., Process],
    memcached_url: str,
) -> None:
    """SIGTERM during a delivery lets the running handler finish before the worker exits."""
    log = app / "delivered.log"
    worker = process(
        "--store", memcached_url, "worker", "cliapp:slow_mapping", "--interval", "0.05",
        "--reliable", CLIAPP_LOG=str(log),
    )  # fmt: skip
    send("slow", "payload")
    deadline = time.monotonic() + 20
    while not (app / "started").exists():
        assert time.monotonic() < deadline and worker.popen.poll() is None, worker.lines
        time.sleep(0.01)
    worker.popen.send_signal(signal.SIGTERM)
    (app / "go").touch()
    assert worker.finish() == 0
    assert "delivered 1 payload(s) (slow=1)" in worker.lines["out"][-1]
    assert log.read_text() == '"payload"\n'
    assert deliver({"slow": print}, reliable=True) == 0  # acknowledged: not delivered again


def test_worker_survives_a_store_that_is_down_at_start(
    app: Path, process: Callable[..., Process], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the store down the worker reports it and retries with a growing pause; once the
    store is up it delivers, and SIGINT stops it with exit 0."""
    port = free_port()
    url = f"memcached://127.0.0.1:{port}"
    worker = process("worker", "cliapp:mapping", "--interval", "0.05", "--max-backoff", "0.2",
                     GAESIGNALS_STORE=url)  # fmt: skip
    worker.wait_for("err", lambda line: "store unavailable: memcached at" in line)
    worker.wait_for("err", lambda line: "retrying in 0.2s" in line)
    assert worker.popen.poll() is None
    with MemcachedServer(port=port):
        monkeypatch.setenv("GAESIGNALS_SECRET_KEY", SECRET)
        assert main(["--store", url, "send", "a", "--data", "1"]) == 0
        worker.wait_for("err", lambda line: "store reachable again" in line)
        worker.wait_for("out", lambda line: _total(line) == 1)
        worker.popen.send_signal(signal.SIGINT)
        assert worker.finish() == 0
    summary = worker.lines["out"][-1]
    assert "worker stopped by SIGINT: delivered 1 payload(s) (a=1)" in summary
    assert summary.endswith("; 1 store outage(s)")


def test_exit_codes_of_the_real_command(app: Path, process: Callable[..., Process]) -> None:
    """`python -m gaesignals` exits 2 on a bad import path or bad JSON, 3 on an unreachable
    store, 0 on success, each failure one line on stderr."""
    down = f"memcached://127.0.0.1:{free_port()}"
    cases = [
        (["deliver", "cliapp_missing:mapping"], 2),
        (["deliver", "cliapp:nope"], 2),
        (["send", "a", "--data", "{"], 2),
        (["--store", down, "deliver", "cliapp:mapping"], 3),
        (["--store", down, "worker", "--once", "cliapp:mapping"], 3),
        (["--store", "memory://", "deliver", "cliapp:mapping"], 0),
    ]
    running = [(process(*argv), argv, code) for argv, code in cases]
    for each, argv, code in running:
        assert each.finish() == code, (argv, each.lines)
        if code:
            assert len(each.lines["err"]) == 1, each.lines
            assert each.lines["err"][0].startswith("gaesignals: error: ")
        else:
            assert each.lines["out"] == ["delivered 0 payload(s)"]


def test_console_script_is_declared() -> None:
    """pyproject declares the `gaesignals` console script, and it names main()."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    module, _, attr = project["scripts"]["gaesignals"].partition(":")
    assert (module, attr) == ("gaesignals.cli", "main")
    assert getattr(cli, attr) is main

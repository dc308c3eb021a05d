"""``gaesignals dashboard``: the dashboard served alone by a real ``python -m gaesignals``
process, and the refusals of the command."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gaesignals import send

from . import cli_support as support
from .cli_support import Process, error_line, run
from .dashboard_support import TOKEN

app = support.app
memcached_url = support.memcached_url
process = support.process


def get_json(url: str, token: str = TOKEN) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def serve(
    process: Callable[..., Process], memcached_url: str, *options: str
) -> tuple[Process, str]:
    """``gaesignals dashboard`` over the test module's signals; the process and its base URL."""
    served = process(
        "--store", memcached_url, "dashboard", "--app", "cliapp_receivers", "--port", "0",
        *options, GAESIGNALS_DASHBOARD_TOKEN=TOKEN,
    )  # fmt: skip
    line = served.wait_for("out", lambda line: "serving the gaesignals dashboard" in line)
    found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    assert found is not None, line
    return served, f"http://127.0.0.1:{found[1]}"


def idle_connection(base: str) -> socket.socket:
    """A connection to ``base`` that sends half a request line and then nothing."""
    host, port = base.removeprefix("http://").split(":")
    idle = socket.create_connection((host, int(port)), timeout=20)
    idle.sendall(b"GET /api/sig")
    return idle


def test_an_idle_connection_holds_up_no_one_nor_sigterm(
    app: Path, process: Callable[..., Process], memcached_url: str
) -> None:
    """With a connection open and silent, another request is answered, and SIGTERM stops
    the server while that connection is still open."""
    served, base = serve(process, memcached_url)
    with idle_connection(base), idle_connection(base):
        send("a", 1)
        report = get_json(f"{base}/api/signals")
        assert [(row["name"], row["pending"]) for row in report["signals"]] == [("a", 1)]
        served.popen.send_signal(signal.SIGTERM)
        assert served.finish() == 0
    assert served.lines["out"][-1] == "dashboard stopped by SIGTERM"
    assert served.lines["err"] == []


def test_a_silent_connection_is_closed_after_the_read_timeout(
    app: Path, process: Callable[..., Process], memcached_url: str
) -> None:
    """A connection that sends nothing for --read-timeout seconds is closed by the server,
    with nothing printed."""
    served, base = serve(process, memcached_url, "--read-timeout", "0.5")
    with idle_connection(base) as idle:
        assert idle.recv(1) == b""  # the server hung up (this side waits at most 20 s)
    assert get_json(f"{base}/api/signals")["store"]["reachable"] is True
    served.popen.send_signal(signal.SIGINT)
    assert served.finish() == 0
    assert served.lines["out"][-1] == "dashboard stopped by SIGINT"
    assert served.lines["err"] == []


def test_serves_the_registered_signals_until_sigterm(
    app: Path, process: Callable[..., Process], memcached_url: str
) -> None:
    """It prints where it listens, answers with the module's signals as the store holds
    them, and on SIGTERM stops and exits 0."""
    served = process(
        "--store", memcached_url, "dashboard", "--app", "cliapp_receivers", "--port", "0",
        GAESIGNALS_DASHBOARD_TOKEN=TOKEN,
    )  # fmt: skip
    line = served.wait_for("out", lambda line: "serving the gaesignals dashboard" in line)
    found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    assert found is not None, line
    base = f"http://127.0.0.1:{found[1]}"
    send("a", 1)
    send("a", 2)
    report = get_json(f"{base}/api/signals")
    assert [(row["name"], row["pending"]) for row in report["signals"]] == [("a", 2)]
    with pytest.raises(urllib.error.HTTPError) as refused:
        get_json(f"{base}/metrics", token="w" * 40)
    assert refused.value.code == 401
    refused.value.close()
    served.popen.send_signal(signal.SIGTERM)
    assert served.finish() == 0
    assert served.lines["out"][-1] == "dashboard stopped by SIGTERM"


def test_refuses_to_start_without_a_token(
    app: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no GAESIGNALS_DASHBOARD_TOKEN, or a short one, it exits 2 before listening,
    saying to set that variable, in the command line's terms, not DashboardApp's arguments."""
    code, out, err = run(capsys, "dashboard", "--app", "cliapp_receivers", "--port", "0")
    assert code == 2 and out == ""
    line = error_line(err)
    assert "set GAESIGNALS_DASHBOARD_TOKEN" in line and "export GAESIGNALS_DASHBOARD_TOKEN=" in line
    assert "token=" not in line.replace("DASHBOARD_TOKEN=", "") and "auth=" not in line
    assert "trust_host_auth" not in line
    monkeypatch.setenv("GAESIGNALS_DASHBOARD_TOKEN", "short")
    code, out, err = run(capsys, "dashboard", "--app", "cliapp_receivers", "--port", "0")
    assert code == 2 and out == ""
    assert "GAESIGNALS_DASHBOARD_TOKEN must be at least 32 bytes" in error_line(err)


def test_refuses_a_module_that_cannot_be_imported(
    app: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken --app is a usage error (exit 2), in one line."""
    monkeypatch.setenv("GAESIGNALS_DASHBOARD_TOKEN", TOKEN)
    code, _, err = run(capsys, "dashboard", "--app", "cliapp_broken", "--port", "0")
    assert code == 2 and "cannot import 'cliapp_broken'" in error_line(err)
    code, _, err = run(capsys, "dashboard", "--app", "cliapp:nothing", "--port", "0")
    assert code == 2 and "not a signal mapping" in error_line(err)


def test_the_command_line_does_not_import_the_dashboard() -> None:
    """Other commands run without the dashboard extra: prometheus_client is imported only by
    ``gaesignals dashboard``."""
    code = (
        "import sys, gaesignals, gaesignals.cli; "
        "print('prometheus_client' in sys.modules, 'gaesignals.dashboard' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"

"""``gaesignals dashboard``: the dashboard served alone by a real ``python -m gaesignals``
process, and the refusals of the command."""

from __future__ import annotations

import json
import re
import signal
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


def test_refuses_to_start_without_a_token(app: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With no GAESIGNALS_DASHBOARD_TOKEN it exits 2 saying why, before listening."""
    code, out, err = run(capsys, "dashboard", "--app", "cliapp_receivers", "--port", "0")
    assert code == 2 and out == ""
    assert "GAESIGNALS_DASHBOARD_TOKEN" in error_line(err)


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

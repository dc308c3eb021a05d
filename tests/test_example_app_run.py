"""The example app served for real by its run script (``scripts/run_example.sh``, as the README
gives it), over HTTP on loopback: it serves, and says what it needs and what it installs."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gaesignals.pytest_plugin import _missing as missing
from gaesignals.testing import MemcachedServer, free_port

from .dev_server import stop_group
from .example_app_support import (
    ROOT,
    _not_on_app_engine,  # noqa: F401 (an autouse fixture)
)

RUN_SCRIPT = ROOT / "scripts" / "run_example.sh"

pytestmark = pytest.mark.gaesignals_stores()  # every test using gaesignals_store, on each store


# -- the README's run command, over HTTP on loopback -------------------------------------------


def _http(port: int, method: str, path: str, body: str = "") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def _wait_for_url(proc: subprocess.Popen[bytes], out: Path, err: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in out.read_text().splitlines():
            if line.startswith("gaesignals example: serving on "):
                return line.rsplit(" ", 1)[1]
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(
        f"run_example.sh did not print its address (exit {proc.poll()}):\n"
        f"{out.read_text()}\n{err.read_text()}"
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["memory", "memcached"])
def test_run_script_serves_the_example(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """``scripts/run_example.sh`` as the README gives it, with this venv's python on PATH."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAESIGNALS_")}
    env.update(
        PORT=str(port),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        GAESIGNALS_NO_INSTALL="1",  # never pip install from a test: this venv has everything
    )
    if backend == "memcached":
        server: MemcachedServer = request.getfixturevalue("gaesignals_memcached")
        server.flush()
        env["GAESIGNALS_STORE"] = server.url
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [str(RUN_SCRIPT)],
            cwd=tmp_path,
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its own process group: gunicorn's workers stop with it
        )
    try:
        url = _wait_for_url(proc, out, err, timeout=60)
        assert url == f"http://127.0.0.1:{port}/"

        status, page = _http(port, "GET", "/")
        assert status == 200 and "gaesignals example" in page
        status, _ = _http(port, "POST", "/send", "text=over+http")
        assert status == 303
        # Each request may land on another worker; every one must see the delivered entry.
        for _ in range(6):
            status, body = _http(port, "GET", "/status.json")
            assert status == 200
            state = json.loads(body)
            assert [g["text"] for g in state["guestbook"]] == ["over http"]
            assert state["pending"]["guestbook"] == 0 and state["pending"]["audit"] == 1
        expected_store = "MemcachedStore" if backend == "memcached" else "MemoryStore"
        assert state["store"].startswith(expected_store)
        workers = "3 worker(s)" if backend == "memcached" else "1 worker(s)"
        assert workers in err.read_text()
    finally:
        stop_group(proc)


def test_run_script_says_memcached_must_be_running(tmp_path: Path) -> None:
    """With a memcached URL where no server listens, the run script stops before serving and
    says to start memcached."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAESIGNALS_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        GAESIGNALS_NO_INSTALL="1",
        GAESIGNALS_STORE=f"memcached://127.0.0.1:{free_port()}",
    )
    done = subprocess.run(
        [str(RUN_SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done
    assert "no memcached answers at '127.0.0.1:" in done.stderr
    assert "start one first, e.g. `memcached -u nobody -p 11211`" in done.stderr
    assert "serving on" not in done.stdout


#: A memcached command the README, the getting started page or the run script gives.
MEMCACHED_COMMAND = re.compile(r"^(memcached [^`&\n]*-p 11211) &|`(memcached [^`]*-p 11211)`", re.M)


def test_the_memcached_command_given_starts_one(tmp_path: Path) -> None:
    """The README, the getting started page and the run script give one memcached command,
    and it starts a server as given, root included (memcached refuses root without ``-u``)."""
    pages = [ROOT / "README.md", ROOT / "docs" / "getting-started.md", RUN_SCRIPT]
    found = [match for page in pages for match in MEMCACHED_COMMAND.findall(page.read_text())]
    commands = {first or second for first, second in found}
    assert len(found) >= 3 and len(commands) == 1, found
    if shutil.which("memcached") is None:
        missing("memcached is not installed (apt-get install memcached)")
    port = free_port()
    argv = commands.pop().replace("-p 11211", f"-p {port} -l 127.0.0.1").split()
    with (tmp_path / "stderr").open("wb") as stderr:
        server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        answer = b""
        for _ in range(200):  # up to ~10 s for it to listen
            if server.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                    conn.sendall(b"version\r\n")
                    answer = conn.recv(100)
                break
            except ConnectionRefusedError:
                time.sleep(0.05)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert answer.startswith(b"VERSION "), (tmp_path / "stderr").read_text()


#: A python that lacks everything the example needs: it fails the script's checks, logs each
#: ``-m`` command it is given, and answers like the tool it stands for.
FAKE_PYTHON = """#!/bin/sh
if [ "$1" = -m ]; then
    echo "$*" >> "$CALLS"
    [ "$2" = pip ] && echo "Collecting webapp2==3.0.0b1"
    exit 0
fi
exit 1
"""


def test_run_script_says_what_it_installs(tmp_path: Path) -> None:
    """When the example's packages are missing, the run script says what it installs and how
    long it takes, then lets pip show its progress (not ``pip -q``'s silence) on stderr."""
    clone = tmp_path / "clone"
    (clone / "scripts").mkdir(parents=True)
    shutil.copy(RUN_SCRIPT, clone / "scripts")
    fake_bin = tmp_path / "bin"
    for python in (fake_bin / "python3", fake_bin / "python", clone / ".venv/bin/python"):
        python.parent.mkdir(parents=True, exist_ok=True)
        python.write_text(FAKE_PYTHON)
        python.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAESIGNALS_")}
    env.update(
        PATH=f"{fake_bin}{os.pathsep}/usr/bin{os.pathsep}/bin", CALLS=str(tmp_path / "calls")
    )
    done = subprocess.run(
        [str(clone / "scripts" / "run_example.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done
    announced = done.stderr.index("== installing gaesignals[example,memcached] into .venv")
    assert "a minute or so the first time" in done.stderr
    assert announced < done.stderr.index("Collecting webapp2") and done.stdout == ""
    calls = (tmp_path / "calls").read_text().splitlines()
    installs = [call for call in calls if call.startswith("-m pip install")]
    assert installs[-1].endswith("-e .[example,memcached]")
    assert [call for call in installs if " -q" in call or "--quiet" in call] == []
    assert calls[-1].startswith("-m gunicorn --config example_app/gunicorn.conf.py")

"""Run an example's development server in a subprocess for a test, and talk to it over
loopback HTTP."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def http_request(
    port: int, method: str, path: str, body: str = "", headers: dict[str, str] | None = None
) -> tuple[int, str, http.client.HTTPMessage]:
    """One request to 127.0.0.1:``port``; ``body`` is form-encoded. Status, text, headers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        sent = dict(headers or {})
        if body:
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body or None, headers=sent)
        response = conn.getresponse()
        return response.status, response.read().decode(), response.headers
    finally:
        conn.close()


def _wait_until_serving(proc: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            http_request(port, "GET", "/")
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing answered on port {port} within {timeout}s")


@contextlib.contextmanager
def serving(
    command: list[str], port: int, tmp_path: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` (a dev server on ``port``) from ``tmp_path`` until the block ends."""
    out = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        _wait_until_serving(proc, port, timeout=30)
        yield proc
    finally:
        stop_group(proc)
        out.close()


def stop_group(proc: subprocess.Popen[Any]) -> None:
    """Stop a server started in a session of its own, with its children: SIGTERM, then
    SIGKILL if it has not exited within 20 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GAESIGNALS_", "FLASK_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env

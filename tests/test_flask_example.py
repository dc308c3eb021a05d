"""The Flask example, driven through Flask's test client, and served by ``flask run``."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from examples.flask_app import CRON_PATH, GUESTBOOK, create_app
from gaesignals.stores import Store
from gaesignals.testing import CapturedSignals, free_port

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "f" * 40


@pytest.fixture(autouse=True)
def _not_on_app_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GAE_ENV", "GAE_APPLICATION", "GAESIGNALS_CRON_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def app(gaesignals_store: Store) -> Flask:
    return create_app({"GAESIGNALS_CRON_TOKEN": TOKEN})


def published(app: Flask) -> list[str]:
    return [entry["text"] for entry in app.extensions["guestbook"]]


@pytest.mark.gaesignals_stores("memory", "memory-cas", "memcached")
def test_sign_sends_and_the_next_request_publishes(
    app: Flask, gaesignals_captured: CapturedSignals
) -> None:
    """The post only sends; the redirected page finds the entry published before it ran."""
    client = app.test_client()
    response = client.post("/sign", data={"name": "ann", "text": "hello, flask"})
    assert response.status_code == 303 and response.headers["Location"] == "/"
    assert gaesignals_captured.data(GUESTBOOK)[0]["text"] == "hello, flask"
    assert published(app) == []
    page = client.get("/")
    assert published(app) == ["hello, flask"]
    assert "1 entry published." in page.text and "hello, flask" in page.text


def test_entries_are_escaped(app: Flask) -> None:
    """Markup in an entry is shown, not run."""
    client = app.test_client()
    client.post("/sign", data={"name": "<b>x</b>", "text": "<script>alert(1)</script>"})
    page = client.get("/").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page


def test_empty_form_sends_nothing(app: Flask, gaesignals_captured: CapturedSignals) -> None:
    """A post without a name or text redirects without sending."""
    app.test_client().post("/sign", data={"name": " ", "text": "x"})
    assert gaesignals_captured == []


def test_after_mode_publishes_once_the_response_is_closed(gaesignals_store: Store) -> None:
    """With ``GAESIGNALS_DELIVER="after"`` delivery waits until a response has been sent."""
    app = create_app({"GAESIGNALS_DELIVER": "after"})
    client = app.test_client()
    post = client.post("/sign", data={"name": "bo", "text": "after"})
    with client.get("/") as page:  # the post's response is still open: nothing delivered yet
        assert "0 entries published." in page.text
    assert published(app) == ["after"]  # closing the page's response delivered it
    post.close()
    assert published(app) == ["after"]


def test_cron_blueprint_needs_the_token(gaesignals_store: Store) -> None:
    """The cron endpoint delivers for the bearer token only."""
    quiet = create_app({"GAESIGNALS_DELIVER": None, "GAESIGNALS_CRON_TOKEN": TOKEN})
    client = quiet.test_client()
    client.post("/sign", data={"name": "cy", "text": "via cron"})
    assert client.get(CRON_PATH).status_code == 403
    answer = client.post(CRON_PATH, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200 and answer.json == {"delivered": 1}
    assert published(quiet) == ["via cron"]


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


def _wait_until_serving(proc: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            _http(port, "GET", "/")
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
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        out.close()


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GAESIGNALS_", "FLASK_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.mark.slow
def test_flask_run_serves_the_example(tmp_path: Path) -> None:
    """``flask --app examples.flask_app run`` on the embedded store, as the README says."""
    port = free_port()
    command = [sys.executable, "-m", "flask", "--app", "examples.flask_app", "run"]
    with serving([*command, "--port", str(port)], port, tmp_path, server_env()):
        status, _ = _http(port, "POST", "/sign", "name=dee&text=over+http")
        assert status == 303
        status, page = _http(port, "GET", "/")
        assert status == 200 and "over http" in page and "1 entry published." in page

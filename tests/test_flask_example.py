"""The Flask example, driven through Flask's test client, and served by ``flask run``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from flask import Flask

from examples.flask_app import CRON_PATH, GUESTBOOK, create_app
from gaesignals.stores import Store
from gaesignals.testing import CapturedSignals, free_port
from tests.dev_server import http_request, server_env, serving

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


@pytest.mark.slow
def test_flask_run_serves_the_example(tmp_path: Path) -> None:
    """``flask --app examples.flask_app run`` on the embedded store, as the README says."""
    port = free_port()
    command = [sys.executable, "-m", "flask", "--app", "examples.flask_app", "run"]
    with serving([*command, "--port", str(port)], port, tmp_path, server_env()):
        status, _, _ = http_request(port, "POST", "/sign", "name=dee&text=over+http")
        assert status == 303
        status, page, _ = http_request(port, "GET", "/")
        assert status == 200 and "over http" in page and "1 entry published." in page

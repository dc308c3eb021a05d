"""The Django example, driven through Django's test client, and served by ``runserver``."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import django
import pytest

from gaesignals.stores import Store
from gaesignals.testing import CapturedSignals, free_port
from tests.dev_server import http_request, server_env, serving
from tests.django_setup import setup_django

setup_django()

from django.core.management import call_command  # noqa: E402
from django.test import Client, override_settings  # noqa: E402

from examples.django_app.guestbook.models import Entry  # noqa: E402
from examples.django_app.guestbook.signals import entry_signed  # noqa: E402

#: Django 6 has django.tasks: the example enqueues a task where Django 5 sends its AsyncSignal.
TASKS = django.VERSION >= (6, 0)
if TASKS:
    from gaesignals.contrib.django.tasks import connect_backends

ROOT = Path(__file__).resolve().parent.parent
MANAGE = ROOT / "examples" / "django_app" / "manage.py"
TOKEN = "e" * 40


@pytest.fixture(autouse=True)
def _example(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("GAE_ENV", "GAE_APPLICATION", "GAESIGNALS_CRON_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    entry_signed.register()  # the test suite clears gaesignals' registry before each test
    if TASKS:
        connect_backends()
    yield
    Entry.objects.all().delete()


@pytest.mark.gaesignals_stores("memory", "memory-cas", "memcached")
def test_sign_sends_and_the_next_request_publishes(
    gaesignals_store: Store, gaesignals_captured: CapturedSignals
) -> None:
    """The post stores the entry and sends a reference to it (Django 6: enqueues the publish
    task with its id); the middleware delivers it before the redirected page, whose entry is
    then published."""
    client = Client()
    response = client.post("/sign", {"name": "ann", "text": "hello from django"})
    assert response.status_code == 302 and response["Location"] == "/"
    entry = Entry.objects.get()
    assert entry.published_at is None
    if TASKS:
        [payload] = gaesignals_captured.data("django_tasks.default.default")
        assert payload["task"] == "examples.django_app.guestbook.tasks.publish_entry"
        assert payload["args"] == [entry.pk]
    else:
        [payload] = gaesignals_captured.data("guestbook.signed")
        assert payload["kwargs"] == {
            "entry": {"__gaesignals_model__": ["guestbook", "entry", entry.pk]}
        }
    page = client.get("/").content.decode()
    entry.refresh_from_db()
    assert entry.published_at is not None and entry.words == 3
    assert "hello from django" in page and "published, 3 word(s)" in page


def test_forms_carry_a_csrf_token(gaesignals_store: Store) -> None:
    """The page's form passes Django's CSRF check, which the example keeps on."""
    client = Client(enforce_csrf_checks=True)
    assert client.post("/sign", {"name": "x", "text": "y"}).status_code == 403
    page = client.get("/").content.decode()
    token = page.split('name=csrfmiddlewaretoken value="', 1)[1].split('"', 1)[0]
    response = client.post("/sign", {"name": "x", "text": "y", "csrfmiddlewaretoken": token})
    assert response.status_code == 302 and Entry.objects.count() == 1


def test_entries_are_escaped(gaesignals_store: Store) -> None:
    """Markup in an entry is shown, not run."""
    client = Client()
    client.post("/sign", {"name": "<b>x</b>", "text": "<script>alert(1)</script>"})
    page = client.get("/").content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page


def test_management_command_publishes_without_the_middleware(gaesignals_store: Store) -> None:
    """With ``DELIVER: None``, ``manage.py deliver_signals`` does the publishing."""
    with override_settings(GAESIGNALS={"DELIVER": None}):
        client = Client()
        client.post("/sign", {"name": "bo", "text": "by the command"})
        assert "pending" in client.get("/").content.decode()
        out = io.StringIO()
        call_command("deliver_signals", stdout=out)
        assert out.getvalue() == "delivered 1\n"
        assert "published, 3 word(s)" in client.get("/").content.decode()


def test_cron_view_publishes_for_the_token(gaesignals_store: Store) -> None:
    """The example's cron URL delivers for the bearer token and refuses anyone else."""
    with override_settings(GAESIGNALS={"DELIVER": None, "CRON_TOKEN": TOKEN}):
        client = Client()
        client.post("/sign", {"name": "cy", "text": "cron"})
        assert client.post("/tasks/deliver-signals").status_code == 403
        answer = client.post("/tasks/deliver-signals", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.json() == {"delivered": 1}
    assert Entry.objects.get().published_at is not None


def test_entry_deleted_before_delivery_is_skipped(
    gaesignals_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """An entry deleted before its signal is delivered: the receiver is skipped, with a
    warning, and the page still renders."""
    client = Client()
    client.post("/sign", {"name": "dee", "text": "deleted soon"})
    Entry.objects.all().delete()
    with caplog.at_level(logging.WARNING, logger="gaesignals"):
        assert client.get("/").status_code == 200
    assert any("no longer exists" in r.getMessage() for r in caplog.records)


def test_models_and_migrations_agree() -> None:
    """The example's migrations describe its models (no missing migration)."""
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


@pytest.mark.slow
def test_runserver_serves_the_example(tmp_path: Path) -> None:
    """``manage.py migrate`` then ``manage.py runserver``, as the README says, on a temporary
    database and the embedded store: sign (with the CSRF token) and see it published."""
    env = server_env()
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["GUESTBOOK_DB"] = str(tmp_path / "db.sqlite3")
    python = [sys.executable, str(MANAGE)]
    subprocess.run([*python, "migrate", "-v", "0"], cwd=tmp_path, env=env, check=True)
    port = free_port()
    command = [*python, "runserver", "--noreload", f"127.0.0.1:{port}"]
    with serving(command, port, tmp_path, env):
        status, page, headers = http_request(port, "GET", "/")
        assert status == 200 and "Guestbook" in page
        cookie = headers["Set-Cookie"].split(";", 1)[0]
        token = page.split('name=csrfmiddlewaretoken value="', 1)[1].split('"', 1)[0]
        body = urllib.parse.urlencode(
            {"name": "eve", "text": "over http", "csrfmiddlewaretoken": token}
        )
        status, _, _ = http_request(port, "POST", "/sign", body, {"Cookie": cookie})
        assert status == 302
        status, page, _ = http_request(port, "GET", "/")
        assert "over http" in page and "published, 2 word(s)" in page

"""The dashboard mounted in host apps: any WSGI app through Mount (webapp2, Flask), and a
Django project through its URL patterns."""

from __future__ import annotations

from urllib.parse import quote, urlencode

import pytest
import webapp2
import webtest
from flask import Flask

from gaesignals import dead_letters, pending
from gaesignals.dashboard import TOKEN_ENV, DashboardApp, Mount
from gaesignals.stores import Store
from tests.dashboard_support import TOKEN, bearer, csrf_of, dead_letter
from tests.django_setup import setup_django


@pytest.fixture(autouse=True)
def _no_token_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)


#: What a browser's form posts (Django's test client would post multipart).
FORM = "application/x-www-form-urlencoded"


def form(**fields: str) -> str:
    return urlencode(fields)


class Home(webapp2.RequestHandler):
    def get(self) -> None:
        self.response.write("the host app")


def test_mount_serves_the_dashboard_under_its_prefix(gaesignals_store: Store) -> None:
    """Under /ops/signals the dashboard answers, its links and cookies carry the prefix, and
    every other path reaches the webapp2 app untouched."""
    host = webapp2.WSGIApplication([("/", Home), ("/ops", Home)])
    app = webtest.TestApp(Mount(host, "/ops/signals", DashboardApp(token=TOKEN)))
    assert app.get("/").text == "the host app"
    assert app.get("/ops").text == "the host app"
    assert app.get("/ops/signals/", status=303).headers["Location"] == "/ops/signals/login"
    form = app.get("/ops/signals/login")
    assert 'action="/ops/signals/login"' in form.text
    answer = app.post("/ops/signals/login", {"csrf": csrf_of(form), "token": TOKEN}, status=303)
    assert answer.headers["Location"] == "/ops/signals/"
    assert "Path=/ops/signals;" in answer.headers["Set-Cookie"]
    page = app.get("/ops/signals/")
    assert page.html.find(id="chart")["data-api"] == "/ops/signals/api/signals?page=1"
    assert page.html.find("link", rel="stylesheet")["href"] == "/ops/signals/static/dashboard.css"
    assert app.get("/ops/signals", headers=bearer()).status_int == 200


def test_mount_refuses_a_bad_prefix() -> None:
    """A prefix must start with / and not end with one."""
    for bad in ("ops", "/ops/", ""):
        with pytest.raises(ValueError, match="prefix"):
            Mount(lambda environ, start: [], bad, None)


def test_a_flask_app_mounts_the_dashboard(gaesignals_store: Store) -> None:
    """app.wsgi_app = Mount(app.wsgi_app, ...) puts the dashboard beside Flask's routes."""
    flask_app = Flask(__name__)
    flask_app.add_url_rule("/", "home", lambda: "flask home")
    flask_app.wsgi_app = Mount(  # type: ignore[method-assign]
        flask_app.wsgi_app, "/ops/signals", DashboardApp(token=TOKEN)
    )
    client = webtest.TestApp(flask_app)
    assert client.get("/").text == "flask home"
    dead_letter("flasked", 1)
    form_page = client.get("/ops/signals/login")
    client.post("/ops/signals/login", {"csrf": csrf_of(form_page), "token": TOKEN}, status=303)
    page = client.get("/ops/signals/signal", {"name": "flasked"})
    assert page.html.find(id="dead-letters") is not None


def test_a_django_project_serves_the_dashboard_behind_its_own_auth(
    gaesignals_store: Store,
) -> None:
    """The URL patterns route under the prefix, the project's check guards them, and the
    dashboard's forms (its own CSRF token, Django's check exempt) requeue a dead letter."""
    setup_django()
    from django.test import Client, override_settings

    with override_settings(ROOT_URLCONF="tests.dashboard_django_urls"):
        client = Client(headers={"X-Operator": "yes"})
        assert Client().get("/ops/signals/").status_code == 403  # the project said no
        dead_letter("dj", {"n": 1})
        page = client.get("/ops/signals/signal", {"name": "dj"})
        assert page.status_code == 200 and page["Content-Security-Policy"].startswith("default")
        text = page.content.decode()
        assert 'action="/ops/signals/signal/requeue?name=dj"' in text
        cookie = client.cookies["gaesignals_csrf"]
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        assert cookie["path"] == "/ops/signals"
        csrf = csrf_of(text)
        answer = client.post("/ops/signals/signal/requeue", form(name="dj", csrf=csrf), FORM)
        assert answer.status_code == 303
        assert answer["Location"] == "/ops/signals/signal?name=dj&done=requeue&n=1"
        assert dead_letters("dj") == [] and pending("dj")["dj"].count == 1
        forged = client.post("/ops/signals/signal/purge", form(name="dj", csrf="x"), FORM)
        assert forged.status_code == 403
        assert client.get("/ops/signals/api/signals").json()["store"]["reachable"] is True


def test_a_django_prefix_latin_1_cannot_hold_is_served(gaesignals_store: Store) -> None:
    """Under a Cyrillic prefix the Django-mounted dashboard answers 200, its links and its
    redirects percent-encode the prefix, and its forms work."""
    setup_django()
    from django.test import Client, override_settings

    encoded = "/ops/" + quote("сигналы")
    with override_settings(ROOT_URLCONF="tests.dashboard_django_urls"):
        client = Client(headers={"X-Operator": "yes"})
        dead_letter("cyr", 1)
        page = client.get(f"{encoded}/signal", {"name": "cyr"})
        assert page.status_code == 200
        assert f'action="{encoded}/signal/requeue?name=cyr"' in page.content.decode()
        assert client.cookies["gaesignals_csrf"]["path"] == encoded
        fields = form(csrf=csrf_of(page.content.decode()))
        answer = client.post(f"{encoded}/signal/requeue?name=cyr", fields, FORM)
        assert answer.status_code == 303
        assert answer["Location"] == f"{encoded}/signal?name=cyr&done=requeue&n=1"
        assert dead_letters("cyr") == []

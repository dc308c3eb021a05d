"""The Flask extension: config from app.config, delivery around requests, the cron blueprint."""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import pytest
from flask import Flask, current_app

import gaesignals
from gaesignals import ConfigurationError, send
from gaesignals.config import get_settings
from gaesignals.contrib.flask import GaeSignals
from gaesignals.stores import Store
from gaesignals.stores.memory import MemoryStore
from gaesignals.testing import DownStore

TOKEN = "c" * 40


@pytest.fixture(autouse=True)
def _no_cron_token(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GAE_ENV", "GAE_APPLICATION", "GAESIGNALS_CRON_TOKEN"):
        monkeypatch.delenv(name, raising=False)


class Recorder:
    """A handler that records payloads and whether an app context was active."""

    def __init__(self) -> None:
        self.data: list[Any] = []
        self.apps: list[str | None] = []

    def __call__(self, data: Any) -> None:
        self.data.append(data)
        try:
            self.apps.append(current_app.name)
        except RuntimeError:
            self.apps.append(None)


def make_app(recorder: Recorder | None = None, **config: Any) -> Flask:
    app = Flask("flask_test_app")
    app.config.update(config)
    seen: list[Any] = []
    app.extensions["seen"] = seen

    @app.get("/")
    def index() -> str:
        seen.append(list(recorder.data) if recorder else [])
        return "index"

    return app


def test_import_gaesignals_imports_no_web_framework() -> None:
    """``import gaesignals`` leaves Flask, Werkzeug and Django unimported."""
    code = (
        "import sys, gaesignals; "
        "print(sorted(m for m in ('flask', 'werkzeug', 'django') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_before_delivers_ahead_of_the_view(gaesignals_store: Store) -> None:
    """By default the extension delivers before each request's view runs."""
    recorder = Recorder()
    app = make_app(recorder)
    GaeSignals(app, {"greet": recorder})
    send("greet", "hi")
    response = app.test_client().get("/")
    assert response.data == b"index"
    assert app.extensions["seen"] == [["hi"]]
    assert recorder.apps == ["flask_test_app"]


def test_registry_is_the_default_mapping(gaesignals_store: Store) -> None:
    """Without a mapping, the registered receivers are delivered."""
    recorder = Recorder()
    gaesignals.connect("greet", recorder)
    app = make_app(recorder)
    GaeSignals().init_app(app)
    send("greet", 1)
    app.test_client().get("/")
    assert recorder.data == [1]


def test_after_delivers_once_the_response_is_closed(gaesignals_store: Store) -> None:
    """``after``: the view does not see the delivery; it runs when the response closes, in an
    app context, and the response is what it would have been without the extension."""
    recorder = Recorder()
    plain = make_app().test_client().get("/")
    app = make_app(recorder, GAESIGNALS_DELIVER="after")
    GaeSignals(app, {"greet": recorder})
    send("greet", "later")
    response = app.test_client().get("/")
    assert app.extensions["seen"] == [[]]
    assert recorder.data == []
    assert response.data == plain.data
    assert response.status == plain.status
    assert dict(response.headers) == dict(plain.headers)
    response.close()
    assert recorder.data == ["later"]
    assert recorder.apps == ["flask_test_app"]


def test_deliver_none_leaves_requests_alone(gaesignals_store: Store) -> None:
    """``GAESIGNALS_DELIVER = None`` hooks nothing into requests."""
    recorder = Recorder()
    app = make_app(recorder, GAESIGNALS_DELIVER=None)
    GaeSignals(app, {"greet": recorder})
    send("greet", 1)
    with app.test_client().get("/"):
        pass
    assert recorder.data == []
    assert gaesignals.deliver({"greet": recorder}) == 1


def test_unknown_deliver_value_is_refused() -> None:
    """A misspelt ``GAESIGNALS_DELIVER`` fails at init_app, not silently."""
    with pytest.raises(ValueError, match="GAESIGNALS_DELIVER"):
        GaeSignals(make_app(GAESIGNALS_DELIVER="before_request"))


def test_interval_limits_deliveries(gaesignals_store: Store) -> None:
    """``GAESIGNALS_INTERVAL`` delivers at most once per interval per process."""
    now = [100.0]
    recorder = Recorder()
    app = make_app(recorder, GAESIGNALS_INTERVAL=10)
    GaeSignals(app, {"greet": recorder}, clock=lambda: now[0])
    client = app.test_client()
    send("greet", 1)
    client.get("/")
    send("greet", 2)
    now[0] += 9
    client.get("/")
    assert recorder.data == [1]
    now[0] += 1
    client.get("/")
    assert recorder.data == [1, 2]


def test_handler_error_never_breaks_the_request(
    gaesignals_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A raising handler is logged on ``gaesignals`` and the request is served."""

    def broken(data: Any) -> None:
        raise RuntimeError("handler bug")

    for when in ("before", "after"):
        app = make_app(GAESIGNALS_DELIVER=when)
        GaeSignals(app, {"greet": broken})
        send("greet", when)
        caplog.clear()
        with (
            caplog.at_level(logging.ERROR, logger="gaesignals"),
            app.test_client().get("/") as response,
        ):
            assert response.status_code == 200 and response.data == b"index"
        failures = [r for r in caplog.records if "failed" in r.getMessage()]
        assert len(failures) == 1 and failures[0].exc_info is not None


@pytest.mark.parametrize("when", ["before", "after"])
def test_store_outage_never_breaks_the_request(when: str, caplog: pytest.LogCaptureFixture) -> None:
    """With the cache down, the request is served and the outage logged once."""
    app = make_app(GAESIGNALS_DELIVER=when, GAESIGNALS_STORE=DownStore())
    GaeSignals(app, {"greet": print})
    with (
        caplog.at_level(logging.ERROR, logger="gaesignals"),
        app.test_client().get("/") as response,
    ):
        assert response.status_code == 200
    assert [r.getMessage() for r in caplog.records] == [
        "no delivery for this request: the cache is down"
    ]


def test_reliable_keeps_what_failed(gaesignals_store: Store) -> None:
    """``GAESIGNALS_RELIABLE = True`` delivers at least once: a failed payload stays."""
    gaesignals.declare("greet", retry_delay=0)  # a failed payload is retried at once
    calls: list[Any] = []

    def flaky(data: Any) -> None:
        calls.append(data)
        if len(calls) == 1:
            raise RuntimeError("first time fails")

    app = make_app(GAESIGNALS_RELIABLE=True, GAESIGNALS_MAX_ATTEMPTS=3)
    GaeSignals(app, {"greet": flaky})
    send("greet", "x")
    client = app.test_client()
    client.get("/")
    client.get("/")
    client.get("/")
    assert calls == ["x", "x"]


def test_config_keys_configure_gaesignals(monkeypatch: pytest.MonkeyPatch) -> None:
    """GAESIGNALS_* keys reach configure(); a key left out falls back to the environment."""
    monkeypatch.setenv("GAESIGNALS_NAMESPACE", "fromenv")
    store = MemoryStore()
    GaeSignals(make_app(GAESIGNALS_STORE=store, GAESIGNALS_CODEC="json", GAESIGNALS_EAGER=True))
    settings = get_settings()
    assert settings.store is store
    assert (settings.codec, settings.namespace, settings.eager) == ("json", "fromenv", True)

    GaeSignals(make_app(GAESIGNALS_STORE="memory://", GAESIGNALS_NAMESPACE="app1"))
    assert get_settings().namespace == "app1" and get_settings().codec == "pickle"

    with pytest.raises(ConfigurationError):
        GaeSignals(make_app(GAESIGNALS_SECRET_KEY="short"))


def test_no_config_keys_leaves_settings_alone(gaesignals_store: Store) -> None:
    """Without GAESIGNALS_* store keys, init_app does not call configure()."""
    GaeSignals(make_app())
    assert get_settings().store is gaesignals_store


# -- the cron blueprint --------------------------------------------------------------------------


def cron_app(recorder: Recorder, **config: Any) -> Flask:
    app = make_app(recorder, GAESIGNALS_DELIVER=None, **config)
    ext = GaeSignals(app, {"audit": recorder})
    app.register_blueprint(ext.cron_blueprint("/tasks/deliver-signals", reliable=True))
    return app


def test_cron_refuses_without_the_token(gaesignals_store: Store) -> None:
    """403 and no delivery without a token, with a wrong one, or with a spoofed cron header."""
    recorder = Recorder()
    client = cron_app(recorder, GAESIGNALS_CRON_TOKEN=TOKEN).test_client()
    send("audit", 1)
    assert client.get("/tasks/deliver-signals").status_code == 403
    wrong = {"Authorization": "Bearer " + "x" * 40}
    assert client.post("/tasks/deliver-signals", headers=wrong).status_code == 403
    spoofed = {"X-Appengine-Cron": "true"}  # not on App Engine: anyone could set it
    answer = client.get("/tasks/deliver-signals", headers=spoofed)
    assert answer.status_code == 403 and answer.json == {"error": "forbidden"}
    assert recorder.data == []


def test_cron_delivers_with_the_bearer_token(gaesignals_store: Store) -> None:
    """200 and ``{"delivered": n}`` with ``Authorization: Bearer <GAESIGNALS_CRON_TOKEN>``."""
    recorder = Recorder()
    client = cron_app(recorder, GAESIGNALS_CRON_TOKEN=TOKEN).test_client()
    send("audit", 1)
    send("audit", 2)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    answer = client.post("/tasks/deliver-signals", headers=auth)
    assert answer.status_code == 200
    assert answer.json == {"delivered": 2}
    assert answer.headers["Cache-Control"] == "no-store"
    assert recorder.data == [1, 2]
    assert client.put("/tasks/deliver-signals", headers=auth).status_code == 405


def test_cron_counts_what_the_same_requests_before_hook_delivered(gaesignals_store: Store) -> None:
    """With per-request delivery on, the cron answer counts what the before_request hook of
    that same request delivered (the endpoint's own delivery finds it gone)."""
    recorder = Recorder()
    app = make_app(recorder, GAESIGNALS_CRON_TOKEN=TOKEN)  # GAESIGNALS_DELIVER: "before"
    ext = GaeSignals(app, {"audit": recorder})
    app.register_blueprint(ext.cron_blueprint("/tasks/deliver-signals"))
    client = app.test_client()
    send("audit", 1)
    send("audit", 2)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/tasks/deliver-signals", headers=auth).json == {"delivered": 2}
    assert recorder.data == [1, 2]
    assert client.post("/tasks/deliver-signals", headers=auth).json == {"delivered": 0}
    send("audit", 3)
    assert client.get("/").data == b"index"  # an ordinary page still delivers before its view
    assert recorder.data == [1, 2, 3]


def test_cron_trusts_app_engine_cron_on_app_engine(
    gaesignals_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On App Engine, which strips the header from outside requests, cron gets in."""
    recorder = Recorder()
    client = cron_app(recorder).test_client()
    monkeypatch.setenv("GAE_ENV", "standard")
    send("audit", 1)
    answer = client.get("/tasks/deliver-signals", headers={"X-Appengine-Cron": "true"})
    assert answer.json == {"delivered": 1}


def test_cron_answers_503_when_the_store_is_down() -> None:
    """A store outage is a 503, not a crash."""
    client = cron_app(Recorder(), GAESIGNALS_CRON_TOKEN=TOKEN, GAESIGNALS_STORE=DownStore())
    answer = client.test_client().get(
        "/tasks/deliver-signals", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert answer.status_code == 503 and answer.json == {"error": "store unavailable"}


def test_cron_short_token_fails_at_registration() -> None:
    """A guessable token is refused when the blueprint is registered."""
    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        cron_app(Recorder(), GAESIGNALS_CRON_TOKEN="short")

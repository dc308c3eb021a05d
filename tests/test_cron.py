"""The scheduled-delivery endpoint: who may trigger it, and what it answers."""

from __future__ import annotations

import hmac
import logging
from typing import Any

import pytest
import webtest

import gaesignals
from gaesignals import ConfigurationError, Signal, dead_letters
from gaesignals.cron import TOKEN_ENV, CronDeliveryApp
from gaesignals.stores import Store
from gaesignals.testing import DownStore

TOKEN = "s3cr3t-" * 6


@pytest.fixture(autouse=True)
def _outside_app_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether this is App Engine is decided per test, whatever the environment says."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.setattr("gaesignals.cron.on_app_engine", lambda: False)


def on_app_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gaesignals.cron.on_app_engine", lambda: True)


class Collector:
    def __init__(self, fail: bool = False) -> None:
        self.got: list[Any] = []
        self.fail = fail

    def __call__(self, data: Any) -> None:
        self.got.append(data)
        if self.fail:
            raise RuntimeError("handler failed")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.gaesignals_stores()
@pytest.mark.parametrize("reliable", [False, True], ids=["weak", "reliable"])
def test_token_delivers_and_counts(gaesignals_store: Store, reliable: bool) -> None:
    got = Collector()
    app = webtest.TestApp(CronDeliveryApp({"digest": got}, reliable=reliable, token=TOKEN))
    for n in range(3):
        Signal("digest").send(n)
    answer = app.get("/", headers=bearer(TOKEN), status=200)
    assert answer.json == {"delivered": 3}
    assert answer.headers["Cache-Control"] == "no-store"
    assert got.got == [0, 1, 2]
    assert app.post("/", headers=bearer(TOKEN), status=200).json == {"delivered": 0}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Appengine-Cron": "true"},  # outside App Engine anyone can send this header
        bearer("s3cr3t-" * 5 + "s3cr3t+"),
        bearer(TOKEN[:-1]),
        bearer(TOKEN + "x"),
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer"},
    ],
    ids=["none", "cron-header", "wrong", "prefix", "longer", "basic", "no-scheme", "empty"],
)
def test_refused_without_credentials(
    gaesignals_store: Store, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """403, no handler runs, the payload stays pending."""
    got = Collector()
    app = webtest.TestApp(CronDeliveryApp({"digest": got}, token=TOKEN))
    Signal("digest").send("kept")
    with caplog.at_level(logging.WARNING, "gaesignals"):
        answer = app.get("/", headers=headers, status=403)
    assert answer.json == {"error": "forbidden"}
    assert got.got == []
    assert "refused a delivery request" in caplog.text
    assert TOKEN not in caplog.text
    assert gaesignals.deliver({"digest": got}) == 1  # it was still there
    assert got.got == ["kept"]


def test_without_a_token_only_app_engine_cron_gets_in(
    gaesignals_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = Collector()
    app = webtest.TestApp(CronDeliveryApp({"digest": got}))
    Signal("digest").send(1)
    app.get("/", headers={"X-Appengine-Cron": "true"}, status=403)
    app.get("/", headers=bearer(""), status=403)
    on_app_engine(monkeypatch)
    app.get("/", headers={"X-Appengine-Cron": "false"}, status=403)
    assert app.get("/", headers={"X-Appengine-Cron": "true"}, status=200).json == {"delivered": 1}
    assert got.got == [1]


def test_token_works_on_app_engine_too(
    gaesignals_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_app_engine(monkeypatch)
    app = webtest.TestApp(CronDeliveryApp({"digest": Collector()}, token=TOKEN))
    app.get("/", headers=bearer(TOKEN), status=200)
    app.get("/", headers=bearer("nope" * 10), status=403)


def test_token_is_compared_in_constant_time(
    gaesignals_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr("gaesignals.cron.hmac.compare_digest", spy)
    app = webtest.TestApp(CronDeliveryApp({"digest": Collector()}, token=TOKEN))
    app.get("/", headers=bearer(TOKEN), status=200)
    app.get("/", headers=bearer("x" * 42), status=403)
    assert compared == [(TOKEN.encode(), TOKEN.encode()), (b"x" * 42, TOKEN.encode())]


def test_token_from_the_environment(
    gaesignals_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    app = webtest.TestApp(CronDeliveryApp({"digest": Collector()}))
    app.get("/", headers=bearer(TOKEN), status=200)
    explicit = webtest.TestApp(CronDeliveryApp({"digest": Collector()}, token="e" * 32))
    explicit.get("/", headers=bearer(TOKEN), status=403)  # an explicit token wins


@pytest.mark.parametrize("token", ["short", "x" * 31, "é" * 15])
def test_short_tokens_are_refused(token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        CronDeliveryApp({"digest": Collector()}, token=token)
    monkeypatch.setenv(TOKEN_ENV, token)
    with pytest.raises(ConfigurationError):
        CronDeliveryApp({"digest": Collector()})


def test_other_methods_are_refused_after_authorization(gaesignals_store: Store) -> None:
    got = Collector()
    app = webtest.TestApp(CronDeliveryApp({"digest": got}, token=TOKEN))
    Signal("digest").send(1)
    app.delete("/", status=403)  # strangers learn nothing, not even the allowed methods
    answer = app.put("/", headers=bearer(TOKEN), status=405)
    assert answer.headers["Allow"] == "GET, POST"
    assert got.got == []


def test_reliable_keeps_failures_for_the_next_run(gaesignals_store: Store) -> None:
    """A failing handler in reliable mode: nothing counted, payload kept, then dead-lettered."""
    gaesignals.declare("digest", retry_delay=0)  # a failed payload is retried at once
    failing = Collector(fail=True)
    app = webtest.TestApp(
        CronDeliveryApp({"digest": failing}, reliable=True, token=TOKEN, max_attempts=2)
    )
    Signal("digest").send("x")
    assert app.get("/", headers=bearer(TOKEN)).json == {"delivered": 0}
    assert app.get("/", headers=bearer(TOKEN)).json == {"delivered": 0}
    assert failing.got == ["x", "x"]
    assert dead_letters("digest") == ["x"]


def test_store_outage_is_a_503(gaesignals_store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """With the store down, an authorized call answers 503 and the outage is logged."""
    gaesignals.configure(store=DownStore("connection refused"))
    app = webtest.TestApp(CronDeliveryApp({"digest": Collector()}, token=TOKEN))
    with caplog.at_level(logging.ERROR, "gaesignals"):
        answer = app.get("/", headers=bearer(TOKEN), status=503)
    assert answer.json == {"error": "store unavailable"}
    assert "connection refused" in caplog.text


def test_repr_names_the_mapping() -> None:
    app = CronDeliveryApp({"digest": Collector()}, reliable=True, token=TOKEN)
    assert repr(app) == "CronDeliveryApp(SignalMapping(['digest']), reliable=True)"


@pytest.mark.parametrize(
    ("software", "believed"),
    [
        ("WSGIServer/0.2 CPython/3.13.0", False),  # wsgiref, and Django's runserver
        ("gunicorn/21.2.0", False),
        ("gunicorn/23.0.0", True),
        ("waitress", True),
        ("Werkzeug/3.1.3", True),
    ],
)
def test_app_engine_cron_is_not_believed_under_servers_that_fold_underscores(
    gaesignals_store: Store,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    software: str,
    believed: bool,
) -> None:
    """On App Engine, X-Appengine-Cron is refused under a server that maps X_Appengine_Cron
    (which App Engine lets through) to the same variable, and believed under the others."""
    on_app_engine(monkeypatch)
    got = Collector()
    app = webtest.TestApp(
        CronDeliveryApp({"digest": got}), extra_environ={"SERVER_SOFTWARE": software}
    )
    Signal("digest").send(1)
    with caplog.at_level(logging.WARNING, logger="gaesignals"):
        answer = app.get("/", headers={"X-Appengine-Cron": "true"}, expect_errors=True)
    assert answer.status_int == (200 if believed else 403)
    assert got.got == ([1] if believed else [])
    assert ("X_Appengine_Cron" in caplog.text) != believed


def test_a_forged_underscore_header_under_wsgiref_is_refused(
    gaesignals_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Served by the standard library's wsgiref on App Engine, a request spelling the header
    X_Appengine_Cron (as a forger must, App Engine strips the real name) gets 403."""
    import http.client
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    on_app_engine(monkeypatch)
    got = Collector()
    server = make_server("127.0.0.1", 0, CronDeliveryApp({"digest": got}), handler_class=Quiet)
    Signal("digest").send(1)
    thread = threading.Thread(target=server.handle_request)
    thread.start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        connection.request("GET", "/", headers={"X_Appengine_Cron": "true"})
        status = connection.getresponse().status
        connection.close()
    finally:
        thread.join(timeout=10)
        server.server_close()
    assert status == 403
    assert got.got == []

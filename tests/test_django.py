"""The Django integration: settings, middleware, cron view, deliver_signals and AsyncSignal.

Django is configured once per process (tests/django_setup.py: the example project's settings
with an in-memory database); each test gets a fresh gaesignals store and registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import gaesignals
from gaesignals import GaeSignalsError, StoreUnavailable, send
from gaesignals.config import get_settings
from gaesignals.stores import Store
from gaesignals.stores.memory import MemoryStore
from gaesignals.testing import DownStore, captured_signals
from tests.django_setup import setup_django

setup_django()

from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.core.management import CommandError, call_command  # noqa: E402
from django.db import transaction  # noqa: E402
from django.test import Client, override_settings  # noqa: E402

from examples.django_app.guestbook.models import Entry  # noqa: E402
from gaesignals.contrib.django.apps import configure_from_settings  # noqa: E402
from gaesignals.contrib.django.signals import MODEL_REF, AsyncSignal, to_refs  # noqa: E402
from tests import django_urls  # noqa: E402

TOKEN = "d" * 40
paid = AsyncSignal("tests.paid")
audited = AsyncSignal("tests.audited", reliable=True, max_attempts=3)


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("GAE_ENV", "GAE_APPLICATION", "GAESIGNALS_CRON_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    django_urls.DELIVERED.clear()
    yield
    for signal in (paid, audited):  # forget this test's receivers, whatever their sender
        with signal.lock:
            signal.receivers.clear()
            signal.sender_receivers_cache.clear()
    Entry.objects.all().delete()


@contextlib.contextmanager
def site(**gaesignals_settings: Any) -> Iterator[Client]:
    """The test URLs with ``settings.GAESIGNALS`` set, and a client built under them."""
    with override_settings(ROOT_URLCONF="tests.django_urls", GAESIGNALS=gaesignals_settings):
        yield Client()


def record(data: Any) -> None:
    django_urls.DELIVERED.append(data)


class Calls:
    """A Django receiver that records (sender, kwargs) and returns a value."""

    def __init__(self, fail: int = 0) -> None:
        self.calls: list[tuple[Any, dict[str, Any]]] = []
        self.fail = fail
        self.__qualname__ = "Calls"  # Django logs failed receivers by their __qualname__

    def __call__(self, sender: Any, **kwargs: Any) -> str:
        self.calls.append((sender, kwargs))
        if len(self.calls) <= self.fail:
            raise RuntimeError(f"receiver failure {len(self.calls)}")
        return "done"


# -- settings and the app ------------------------------------------------------------------------


def test_import_gaesignals_contrib_django_stays_lazy() -> None:
    """The app's package imports nothing from Django until its modules are used."""
    code = "import sys, gaesignals.contrib.django; print('django' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_settings_dict_configures_gaesignals(monkeypatch: pytest.MonkeyPatch) -> None:
    """STORE, NAMESPACE, CODEC and EAGER reach configure(); left-out keys come from the env."""
    monkeypatch.setenv("GAESIGNALS_NAMESPACE", "fromenv")
    store = MemoryStore()
    with override_settings(GAESIGNALS={"STORE": store, "CODEC": "json", "EAGER": True}):
        configure_from_settings()
    settings = get_settings()
    assert settings.store is store
    assert (settings.codec, settings.namespace, settings.eager) == ("json", "fromenv", True)


def test_settings_without_store_keys_leave_gaesignals_alone(gaesignals_store: Store) -> None:
    """A GAESIGNALS dict with only delivery keys does not call configure()."""
    with override_settings(GAESIGNALS={"DELIVER": "after", "INTERVAL": 5}):
        configure_from_settings()
    assert get_settings().store is gaesignals_store


@pytest.mark.parametrize(
    "bad",
    [{"STOER": "memory://"}, {"DELIVER": "before_view"}, ["STORE"]],
    ids=["unknown-key", "bad-deliver", "not-a-dict"],
)
def test_bad_settings_are_refused(bad: Any) -> None:
    """Typos in GAESIGNALS fail loudly."""
    with override_settings(GAESIGNALS=bad), pytest.raises(ImproperlyConfigured):
        configure_from_settings()


def test_short_cron_token_fails_at_start_up() -> None:
    """The app's ready() refuses a guessable CRON_TOKEN."""
    from django.apps import apps

    with (
        override_settings(GAESIGNALS={"CRON_TOKEN": "short"}),
        pytest.raises(gaesignals.ConfigurationError),
    ):
        apps.get_app_config("gaesignals").ready()


def test_signals_modules_of_installed_apps_are_autodiscovered() -> None:
    """ready() imported the guestbook's signals.py, which connected its receiver."""
    from examples.django_app.guestbook.signals import entry_signed, publish

    assert "examples.django_app.guestbook.signals" in sys.modules
    assert [r for r in entry_signed._live_receivers(Entry)[0]] == [publish]


# -- the middleware ------------------------------------------------------------------------------


def test_middleware_delivers_before_the_view(gaesignals_store: Store) -> None:
    """By default the registered receivers are delivered before the view runs."""
    gaesignals.connect("greet", record)
    send("greet", "hi")
    with site() as browser:
        assert browser.get("/").json() == {"seen": ["hi"]}
        assert browser.get("/").json() == {"seen": ["hi"]}  # not twice


def test_middleware_after_delivers_once_the_response_is_closed(gaesignals_store: Store) -> None:
    """``DELIVER: "after"``: the view runs first; delivery happens when Django closes the
    response (the test client closes it as a server would) and the response is unchanged."""
    gaesignals.connect("greet", record)
    send("greet", "later")
    with site(DELIVER="after") as browser:
        response = browser.get("/")
    assert response.json() == {"seen": []}
    assert django_urls.DELIVERED == ["later"]


def test_middleware_deliver_none_is_not_used(gaesignals_store: Store) -> None:
    """``DELIVER: None`` takes the middleware out of the chain."""
    gaesignals.connect("greet", record)
    send("greet", 1)
    with site(DELIVER=None) as browser:
        assert browser.get("/").json() == {"seen": []}
    assert django_urls.DELIVERED == []


def test_middleware_interval(gaesignals_store: Store) -> None:
    """``INTERVAL``: at most one delivery per interval per process (the first request's)."""
    gaesignals.connect("greet", record)
    with site(INTERVAL=3600) as browser:
        send("greet", 1)
        assert browser.get("/").json() == {"seen": [1]}
        send("greet", 2)
        assert browser.get("/").json() == {"seen": [1]}
    assert gaesignals.deliver() == 1


def test_middleware_reliable(gaesignals_store: Store) -> None:
    """``RELIABLE: True`` keeps a payload whose handler failed, for the next request."""
    gaesignals.declare("greet", retry_delay=0)  # a failed payload is retried at once
    calls: list[Any] = []

    def flaky(data: Any) -> None:
        calls.append(data)
        if len(calls) == 1:
            raise RuntimeError("first time fails")

    gaesignals.connect("greet", flaky)
    send("greet", "x")
    with site(RELIABLE=True) as browser:
        browser.get("/")
        browser.get("/")
        browser.get("/")
    assert calls == ["x", "x"]


@pytest.mark.parametrize("when", ["before", "after"])
def test_handler_error_never_breaks_the_request(
    when: str, gaesignals_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A raising handler is logged once on ``gaesignals``; the view answers as usual."""

    def broken(data: Any) -> None:
        raise RuntimeError("handler bug")

    gaesignals.connect("greet", broken)
    send("greet", 1)
    with caplog.at_level(logging.ERROR, logger="gaesignals"), site(DELIVER=when) as browser:
        response = browser.get("/")
    assert response.status_code == 200
    failures = [r for r in caplog.records if r.name == "gaesignals"]
    assert len(failures) == 1 and failures[0].exc_info is not None


@pytest.mark.parametrize("when", ["before", "after"])
def test_store_outage_never_breaks_the_request(when: str, caplog: pytest.LogCaptureFixture) -> None:
    """With the cache down the request is served and the outage logged once."""
    gaesignals.configure(store=DownStore())
    gaesignals.connect("greet", record)
    with caplog.at_level(logging.ERROR, logger="gaesignals"), site(DELIVER=when) as browser:
        assert browser.get("/").status_code == 200
    assert [r.getMessage() for r in caplog.records] == [
        "no delivery for this request: the cache is down"
    ]


# -- the cron view -------------------------------------------------------------------------------


def test_cron_view_refuses_without_the_token(gaesignals_store: Store) -> None:
    """403 and no delivery without the bearer token, or with a spoofed cron header."""
    gaesignals.connect("audit", record)
    send("audit", 1)
    with site(DELIVER=None, CRON_TOKEN=TOKEN) as browser:
        assert browser.get("/tasks/deliver-signals").status_code == 403
        spoofed = browser.get("/tasks/deliver-signals", headers={"X-Appengine-Cron": "true"})
        assert spoofed.status_code == 403 and spoofed.json() == {"error": "forbidden"}
        wrong = browser.post("/tasks/deliver-signals", headers={"Authorization": "Bearer no"})
        assert wrong.status_code == 403
    assert django_urls.DELIVERED == []


def test_cron_view_delivers_with_the_bearer_token(gaesignals_store: Store) -> None:
    """200 and ``{"delivered": n}`` with ``Authorization: Bearer <CRON_TOKEN>``; 405 to PUT."""
    gaesignals.connect("audit", record)
    send("audit", 1)
    send("audit", 2)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with site(DELIVER=None, CRON_TOKEN=TOKEN) as browser:
        answer = browser.post("/tasks/deliver-signals", headers=auth)
        assert answer.status_code == 200 and answer.json() == {"delivered": 2}
        assert answer["Cache-Control"] == "no-store"
        put = browser.put("/tasks/deliver-signals", headers=auth)
        assert put.status_code == 405 and put["Allow"] == "GET, POST"
    assert django_urls.DELIVERED == [1, 2]


def test_cron_view_counts_what_the_middleware_delivered_first(gaesignals_store: Store) -> None:
    """With the middleware delivering before views, the cron view's answer counts what the
    middleware delivered in that same request."""
    gaesignals.connect("audit", record)
    send("audit", 1)
    send("audit", 2)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    middleware = ["gaesignals.contrib.django.middleware.SignalsMiddleware"]
    with override_settings(MIDDLEWARE=middleware), site(CRON_TOKEN=TOKEN) as browser:
        answer = browser.post("/tasks/deliver-signals", headers=auth)
        assert answer.status_code == 200 and answer.json() == {"delivered": 2}
    assert django_urls.DELIVERED == [1, 2]


def test_cron_view_token_from_the_environment(
    gaesignals_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without CRON_TOKEN, GAESIGNALS_CRON_TOKEN is the token, as for CronDeliveryApp."""
    monkeypatch.setenv("GAESIGNALS_CRON_TOKEN", TOKEN)
    with site(DELIVER=None) as browser:
        answer = browser.get("/tasks/deliver-signals", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.json() == {"delivered": 0}


def test_cron_view_answers_503_when_the_store_is_down() -> None:
    """A store outage is a 503, not a crash."""
    gaesignals.configure(store=DownStore())
    gaesignals.connect("audit", record)
    with site(DELIVER=None, CRON_TOKEN=TOKEN) as browser:
        answer = browser.get("/tasks/deliver-signals", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 503 and answer.json() == {"error": "store unavailable"}


# -- the management command ----------------------------------------------------------------------


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("deliver_signals", *args, stdout=out)
    return out.getvalue()


def test_command_delivers_and_prints_the_count(gaesignals_store: Store) -> None:
    """``manage.py deliver_signals`` delivers the registered receivers once."""
    gaesignals.connect("audit", record)
    send("audit", 1)
    send("audit", 2)
    assert run() == "delivered 2\n"
    assert django_urls.DELIVERED == [1, 2]
    assert run() == "delivered 0\n"
    send("audit", 3)
    assert run("--verbosity", "0") == ""
    assert django_urls.DELIVERED == [1, 2, 3]


def test_command_reliable_keeps_failures(gaesignals_store: Store) -> None:
    """``--reliable --max-attempts 2``: a failing payload stays, then goes to dead letters."""
    gaesignals.declare("audit", retry_delay=0)  # a failed payload is retried at once

    def broken(data: Any) -> None:
        raise RuntimeError("nope")

    gaesignals.connect("audit", broken)
    send("audit", "x")
    assert run("--reliable", "--max-attempts", "2") == "delivered 0\n"
    assert gaesignals.dead_letters("audit") == []
    assert run("--reliable", "--max-attempts", "2") == "delivered 0\n"
    assert gaesignals.dead_letters("audit") == ["x"]


def test_command_weak_overrides_a_declared_mode(gaesignals_store: Store) -> None:
    """``--weak`` delivers a signal declared reliable at most once: a failure is dropped."""

    def broken(data: Any) -> None:
        raise RuntimeError("nope")

    gaesignals.connect("audit", broken, reliable=True)
    send("audit", "x")
    run("--weak")
    assert gaesignals.deliver({"audit": record}) == 0


def test_command_loop_runs_rounds(gaesignals_store: Store) -> None:
    """``--loop --rounds N --interval 0``: N deliveries, each non-empty one printed, then a
    total."""
    gaesignals.connect("audit", record)
    send("audit", 1)
    assert run("--loop", "--rounds", "3", "--interval", "0") == (
        "delivered 1\ndelivered 1 in 3 round(s)\n"
    )


def test_command_errors(gaesignals_store: Store) -> None:
    """Conflicting modes, bad numbers and a store outage are command errors."""
    with pytest.raises(CommandError):
        run("--reliable", "--weak")
    with pytest.raises(CommandError, match="lease"):
        run("--reliable", "--lease", "0")
    gaesignals.connect("audit", record)
    gaesignals.configure(store=DownStore())
    with pytest.raises(CommandError, match="no delivery: the cache is down"):
        run()


def test_command_loop_survives_an_outage(caplog: pytest.LogCaptureFixture) -> None:
    """A looping worker logs an outage and carries on."""
    gaesignals.connect("audit", record)
    gaesignals.configure(store=DownStore())
    with caplog.at_level(logging.ERROR, logger="gaesignals"):
        out = run("--loop", "--rounds", "2", "--interval", "0")
    assert out == "delivered 0 in 2 round(s)\n"
    assert len(caplog.records) == 2


# -- AsyncSignal ---------------------------------------------------------------------------------


def test_send_defers_and_delivery_fetches_the_model_again(gaesignals_store: Store) -> None:
    """``send`` stores (sender, kwargs) and returns []; delivery calls the receivers with the
    model class and a fresh instance read from the database."""
    receiver = Calls()
    paid.connect(receiver, sender=Entry, weak=False)
    entry = Entry.objects.create(name="ann", text="hello")
    assert paid.send(sender=Entry, entry=entry, amount=5) == []
    assert receiver.calls == []
    Entry.objects.filter(pk=entry.pk).update(text="changed since")
    assert gaesignals.deliver() == 1
    [(sender, kwargs)] = receiver.calls
    assert sender is Entry
    assert kwargs["amount"] == 5 and kwargs["signal"] is paid
    assert kwargs["entry"] == entry and kwargs["entry"] is not entry
    assert kwargs["entry"].text == "changed since"


def test_payload_holds_references_not_rows(gaesignals_store: Store) -> None:
    """What is stored is the reference (app label, model, pk), nested ones included."""
    entry = Entry.objects.create(name="ann", text="hello")
    with captured_signals() as sent:
        paid.send(sender=Entry, entry=entry, many=[entry, {"e": entry}])
    [payload] = sent.data("tests.paid")
    ref = {MODEL_REF: ["guestbook", "entry", entry.pk]}
    assert payload == {
        "sender": {MODEL_REF: ["guestbook", "entry"]},
        "kwargs": {"entry": ref, "many": [ref, {"e": ref}]},
    }


@pytest.mark.gaesignals_config(codec="json")
def test_model_references_travel_with_the_json_codec(gaesignals_store: Store) -> None:
    """With ``codec="json"`` references and nested containers still come back as models."""
    receiver = Calls()
    paid.connect(receiver, weak=False)
    entry = Entry.objects.create(name="bo", text="json")
    paid.send(sender=Entry, entries=[entry], by_name={"bo": entry}, note="n")
    assert gaesignals.deliver() == 1
    [(sender, kwargs)] = receiver.calls
    assert sender is Entry
    assert kwargs["entries"] == [entry] and kwargs["by_name"] == {"bo": entry}
    assert kwargs["note"] == "n"


def test_deleted_row_skips_the_payload_with_a_warning(
    gaesignals_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A referenced row deleted before delivery: receivers are not called, a warning says
    why, and the payload is not retried (even in reliable mode)."""
    receiver = Calls()
    audited.connect(receiver, weak=False)
    entry = Entry.objects.create(name="cy", text="gone soon")
    audited.send(sender=None, entry=entry)
    entry.delete()
    with caplog.at_level(logging.WARNING, logger="gaesignals"):
        assert gaesignals.deliver() == 1
    assert receiver.calls == []
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "guestbook.Entry with pk" in warning.getMessage()
    assert "no longer exists" in warning.getMessage()
    assert gaesignals.deliver() == 0


def test_send_now_runs_receivers_at_once(gaesignals_store: Store) -> None:
    """``send_now`` is Django's Signal.send: same objects, results returned, nothing stored."""
    receiver = Calls()
    paid.connect(receiver, weak=False)
    entry = Entry(name="unsaved", text="fine for send_now")
    with captured_signals() as sent:
        results = paid.send_now(sender=Entry, entry=entry)
    assert results == [(receiver, "done")]
    assert receiver.calls[0][1]["entry"] is entry
    assert sent == []


def test_senders_are_filtered_as_django_does(gaesignals_store: Store) -> None:
    """A receiver connected with ``sender=Entry`` gets only Entry's sends."""
    for_entry, for_all = Calls(), Calls()
    paid.connect(for_entry, sender=Entry, weak=False)
    paid.connect(for_all, weak=False)
    paid.send(sender=None, n=1)
    paid.send(sender=Entry, n=2)
    assert gaesignals.deliver() == 2
    assert [kw["n"] for _, kw in for_entry.calls] == [2]
    assert [kw["n"] for _, kw in for_all.calls] == [1, 2]


def test_a_failing_receiver_does_not_stop_the_others(
    gaesignals_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Every receiver runs; a failure is logged and makes a reliable signal retry."""
    gaesignals.declare("tests.audited", retry_delay=0)  # a failed payload is retried at once
    bad, good = Calls(fail=1), Calls()
    audited.connect(bad, weak=False, dispatch_uid="bad")
    audited.connect(good, weak=False, dispatch_uid="good")
    audited.send(sender=None, n=1)
    with caplog.at_level(logging.ERROR):
        assert gaesignals.deliver() == 0
    assert len(good.calls) == 1 and len(bad.calls) == 1
    [failure] = [r for r in caplog.records if r.name == "gaesignals"]
    assert "1 receiver(s) of AsyncSignal('tests.audited') failed" in str(failure.exc_info[1])
    assert gaesignals.deliver() == 1  # declared reliable: retried, and now it works
    assert len(good.calls) == 2 and len(bad.calls) == 2


def test_unsaved_instance_is_refused(gaesignals_store: Store) -> None:
    """Only a saved instance has a reference to send."""
    with pytest.raises(ValueError, match="not saved"):
        paid.send(sender=Entry, entry=Entry(name="x", text="y"))


def test_send_inside_a_transaction_waits_for_the_commit(gaesignals_store: Store) -> None:
    """Inside ``atomic`` the payload is stored on commit, and never on rollback."""
    receiver = Calls()
    paid.connect(receiver, weak=False)
    with captured_signals() as sent:
        with transaction.atomic():
            entry = Entry.objects.create(name="tx", text="committed")
            paid.send(sender=Entry, entry=entry)
            assert sent == []
        assert sent.names() == ["tests.paid"]
        with contextlib.suppress(RuntimeError), transaction.atomic():
            Entry.objects.create(name="tx", text="rolled back")
            paid.send(sender=Entry, n=2)
            raise RuntimeError("roll back")
        assert sent.names() == ["tests.paid"]
    assert gaesignals.deliver() == 1
    assert receiver.calls[0][1]["entry"].text == "committed"


def test_send_inside_a_transaction_checks_the_payload_at_once(gaesignals_store: Store) -> None:
    """An unserializable payload fails at send, not at commit."""
    with transaction.atomic(), pytest.raises(gaesignals.UnserializablePayload):
        paid.send(sender=None, bad=lambda: None)


def test_send_robust_reports_store_errors(caplog: pytest.LogCaptureFixture) -> None:
    """``send_robust`` never raises, not even at commit: the error is logged (and returned
    when it happens at once); ``send`` raises it."""
    gaesignals.configure(store=DownStore())
    [(signal, error)] = paid.send_robust(sender=None, n=1)
    assert signal is paid and isinstance(error, StoreUnavailable)
    with caplog.at_level(logging.ERROR), transaction.atomic():
        assert paid.send_robust(sender=None, n=2) == []
    assert len(caplog.records) == 2
    with pytest.raises(StoreUnavailable):
        paid.send(sender=None, n=1)
    with pytest.raises(StoreUnavailable), transaction.atomic():
        paid.send(sender=None, n=1)


def test_eager_sends_deliver_at_once(gaesignals_store: Store) -> None:
    """With ``eager`` configured, a send runs the receivers now, through the references."""
    gaesignals.configure(store=gaesignals_store, eager=True)
    receiver = Calls()
    paid.connect(receiver, weak=False)
    entry = Entry.objects.create(name="eager", text="now")
    paid.send(sender=Entry, entry=entry)
    assert receiver.calls[0][1]["entry"] == entry
    assert receiver.calls[0][1]["entry"] is not entry


def test_asend_defers_too(gaesignals_store: Store) -> None:
    """The async ``asend`` stores a payload like ``send`` does."""
    receiver = Calls()
    paid.connect(receiver, weak=False)
    assert asyncio.run(paid.asend(sender=None, n=1)) == []
    assert receiver.calls == []
    assert gaesignals.deliver() == 1 and receiver.calls[0][1]["n"] == 1


def test_registration_follows_receivers(gaesignals_store: Store) -> None:
    """The first receiver registers the signal with gaesignals; the last one leaving
    unregisters it, and its payloads then wait for a process that has receivers."""
    receiver = Calls()
    assert "tests.audited" not in gaesignals.registry.names()
    audited.connect(receiver, weak=False)
    assert gaesignals.registry.names() == ["tests.audited"]
    assert gaesignals.registry.spec("tests.audited").reliable is True
    audited.disconnect(receiver)
    assert gaesignals.registry.names() == []
    audited.send(sender=None, n=1)
    assert gaesignals.deliver() == 0
    audited.connect(receiver, weak=False)
    assert gaesignals.deliver() == 1


def test_a_payload_that_is_not_a_signals_is_a_failure(gaesignals_store: Store) -> None:
    """Something else sent under the signal's name is refused, not guessed at."""
    with pytest.raises(GaeSignalsError, match="not a payload"):
        paid.deliver([1, 2])


def test_to_refs_leaves_other_values_alone() -> None:
    """Plain values, and tuples of them, pass through unchanged."""
    value = {"a": (1, "b"), "c": [None, 2.5]}
    assert to_refs(value) == value

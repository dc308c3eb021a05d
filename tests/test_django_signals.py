"""The Django AsyncSignal: sends deferred (at commit inside a transaction), model instances sent
as references and fetched again, receivers filtered and isolated as Django's own signals do.

Django is configured once per process (tests/django_setup.py: the example project's settings
with an in-memory database); each test gets a fresh gaesignals store and registry, and the
cleanup of django_support."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest

import gaesignals
from gaesignals import GaeSignalsError, StoreUnavailable
from gaesignals.stores import Store
from gaesignals.testing import DownStore, captured_signals
from tests.django_setup import setup_django

setup_django()

from django.db import transaction  # noqa: E402

from examples.django_app.guestbook.models import Entry  # noqa: E402
from gaesignals.contrib.django.signals import MODEL_REF, to_refs  # noqa: E402

from .django_support import (  # noqa: E402
    _clean,  # noqa: F401 (an autouse fixture)
    audited,
    paid,
)


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

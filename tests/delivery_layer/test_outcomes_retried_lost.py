"""The ``retried`` and ``lost`` outcomes (:mod:`gaesignals.delivery.outcomes`): a reliable
payload tried again, and payloads the cache lost before delivery, reach the store counters,
the OpenTelemetry counters and the logs through the one recorder, like every other outcome."""

from __future__ import annotations

import logging

import pytest

import gaesignals
from gaesignals import deliver, send, send_multi, stats
from gaesignals.accounting import Loss
from gaesignals.config import get_settings
from gaesignals.delivery.outcomes import Outcome, Outcomes
from gaesignals.inspection import REPORTED
from gaesignals.keys import signal_keys
from gaesignals.registration import SignalSpec
from gaesignals.stores.memory import MemoryStore

from .support import Metrics

pytestmark = pytest.mark.usefixtures("memory")


def _fail(data: object) -> None:
    raise ValueError("no")


def _evict_queue(name: str) -> None:
    """Delete ``name``'s queue key behind the library's back, as an eviction would."""
    with get_settings().store.connection() as conn:
        conn.delete_many([signal_keys(name, get_settings().namespace).queue])


def test_stats_report_retried_with_the_other_outcomes() -> None:
    """``retried`` is one of the counters :func:`gaesignals.stats` reports."""
    assert "retried" in REPORTED
    assert stats("quiet")["quiet"]["retried"] == 0


@pytest.mark.parametrize("retry_delay", [0, 5], ids=["at-once", "rescheduled"])
def test_a_retried_payload_is_counted_and_measured_per_attempt(
    metrics: Metrics,
    retry_delay: float,
) -> None:
    """A reliable payload that fails and stays to be tried again is ``retried`` once per such
    attempt, in the store and the metrics, besides ``failed``; its last attempt is
    dead-lettered, not retried."""
    gaesignals.declare("flaky", reliable=True, max_attempts=2, retry_delay=retry_delay)
    send("flaky", 1)
    deliver({"flaky": _fail})
    assert stats("flaky")["flaky"]["retried"] == 1
    assert metrics.of("retried") == {"flaky": 1}
    if retry_delay:
        return  # rescheduled: not due again within this test
    deliver({"flaky": _fail})
    counted = stats("flaky")["flaky"]
    assert (counted["failed"], counted["retried"], counted["dead_lettered"]) == (2, 1, 1)
    assert metrics.of("retried") == {"flaky": 1}


@pytest.mark.parametrize("reliable", [False, True], ids=["weak", "reliable"])
def test_lost_payloads_reach_the_metrics_and_the_log_once(
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
    reliable: bool,
) -> None:
    """Payloads the cache lost are reported once by the delivery whose lost check found them:
    the ``lost`` counter, the ``gaesignals.payloads.lost`` metric and one warning agree."""
    gaesignals.declare("evicted", reliable=reliable)
    send_multi([("evicted", 1), ("evicted", 2), ("evicted", 3)])
    _evict_queue("evicted")
    send("evicted", 4)
    with caplog.at_level(logging.WARNING, "gaesignals"):
        deliver({"evicted": lambda data: None})
        deliver({"evicted": lambda data: None})
    assert stats("evicted")["evicted"]["lost"] == 3
    assert metrics.of("lost") == {"evicted": 3}
    assert caplog.text.count("3 payload(s) of signal 'evicted' vanished") == 1


def _recorder(*, counted_by_take: bool = False) -> Outcomes:
    keys = {"orders": signal_keys("orders", get_settings().namespace)}
    return Outcomes(
        keys, {"orders": SignalSpec("orders")}, counting=True, counted_by_take=counted_by_take
    )


def _counter(name: str) -> str:
    return signal_keys("orders", get_settings().namespace).counter(name)


@pytest.mark.parametrize("counted_by_take", [False, True], ids=["reliable", "weak"])
def test_a_loss_is_measured_and_logged_but_not_counted_again(
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
    counted_by_take: bool,
) -> None:
    """The lost check already wrote its estimate by CAS: the recorder changes no counter for
    a loss, and tells the metrics and the log how many went and how many in all."""
    outcomes = _recorder(counted_by_take=counted_by_take)
    with caplog.at_level(logging.WARNING, "gaesignals"):
        outcomes.lost({"orders": Loss(more=2, total=5)})
    assert not outcomes.changes
    assert metrics.of("lost") == {"orders": 2}
    assert "2 payload(s) of signal 'orders' vanished" in caplog.text
    assert "5 lost in all" in caplog.text


def test_a_retry_is_one_counter_change(memory: MemoryStore) -> None:
    """A retried report adds to the ``retried`` counter alone (its failure is its own report)."""
    outcomes = _recorder()
    outcomes.report("orders", Outcome.RETRIED, 2)
    assert dict(outcomes.changes) == {_counter("retried"): 2}

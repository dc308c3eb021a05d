"""The ``coalesced``, ``cancelled`` and ``purged`` counts, from the public API down: ``stats()``
adds up (sent = delivered + coalesced + cancelled + purged), the OpenTelemetry counters
``gaesignals.payloads.*`` hear the same outcomes, and ``/metrics`` exports them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import webtest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client.parser import text_string_to_metric_families

import gaesignals
from gaesignals import declare, deliver, purge, send, stats, tracing
from gaesignals.dashboard import TOKEN_ENV, DashboardApp
from gaesignals.stores import Store
from tests.dashboard_support import TOKEN, bearer

SIGNALS = ("user_54274_profile_changed", "reminder", "backfill")


def workload(reliable: bool) -> list[object]:
    """Ten coalesced sends, two cancelled of three, four purged: returns what ran."""
    ran: list[object] = []
    declare("user_54274_profile_changed", coalesce=True, reliable=reliable)
    declare("reminder", reliable=reliable)
    for version in range(10):
        send("user_54274_profile_changed", version)
    receipts = [send("reminder", n) for n in range(3)]
    receipts[0].cancel()
    gaesignals.cancel("reminder", receipts[2].id)
    for n in range(4):
        send("backfill", n)
    assert purge("backfill") == 4
    deliver({"user_54274_profile_changed": ran.append, "reminder": ran.append})
    return ran


@pytest.mark.parametrize("store_kind", ["memory", "memory-cas", "memcached", "redis"])
def test_the_counts_add_up(store: Store, reliable: bool) -> None:
    """Every payload sent is counted once: delivered, coalesced, cancelled or purged, in weak
    and reliable delivery, on stores with and without append and with the native take."""
    ran = workload(reliable)
    assert ran == [9, 1]
    counts = stats(SIGNALS)
    profile = counts["user_54274_profile_changed"]
    assert (profile["sent"], profile["delivered"], profile["coalesced"]) == (10, 1, 9)
    assert (counts["reminder"]["sent"], counts["reminder"]["delivered"]) == (3, 1)
    assert counts["reminder"]["cancelled"] == 2
    assert (counts["backfill"]["sent"], counts["backfill"]["purged"]) == (4, 4)
    for name in SIGNALS:
        c = counts[name]
        assert c["sent"] == c["delivered"] + c["coalesced"] + c["cancelled"] + c["purged"], name
        assert c["lost"] == c["failed"] == c["dropped"] == c["expired"] == 0, name


@pytest.fixture
def meter() -> Iterator[InMemoryMetricReader]:
    """An SDK meter provider in use by the library for one test, then none again."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    tracing.use(None, provider)
    try:
        yield reader
    finally:
        tracing.use()
        provider.shutdown()


def counted(reader: InMemoryMetricReader, outcome: str) -> dict[str, int]:
    """Each signal's value of the counter ``gaesignals.payloads.<outcome>``."""
    data = reader.get_metrics_data()
    values: dict[str, int] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == f"gaesignals.payloads.{outcome}":
                    for point in metric.data.data_points:
                        values[str(point.attributes[tracing.DESTINATION])] = int(point.value)
    return values


def test_the_opentelemetry_counters_hear_the_same(
    gaesignals_store: Store, meter: InMemoryMetricReader, reliable: bool
) -> None:
    """``gaesignals.payloads.coalesced``, ``.cancelled`` and ``.purged`` count what the
    store counters count."""
    workload(reliable)
    assert counted(meter, "coalesced") == {"user_54274_profile_changed": 9}
    assert counted(meter, "cancelled") == {"reminder": 2}
    assert counted(meter, "purged") == {"backfill": 4}


def test_metrics_exports_the_new_outcomes(
    gaesignals_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/metrics`` has a ``gaesignals_payloads_total`` sample per new outcome."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    workload(reliable=False)
    answer = webtest.TestApp(DashboardApp(list(SIGNALS), token=TOKEN)).get(
        "/metrics", headers=bearer()
    )
    samples = {
        (sample.labels.get("signal"), sample.labels.get("outcome")): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
        if sample.name == "gaesignals_payloads_total"
    }
    assert samples[("user_54274_profile_changed", "coalesced")] == 9
    assert samples[("reminder", "cancelled")] == 2
    assert samples[("backfill", "purged")] == 4

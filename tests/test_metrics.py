"""``/metrics``: the Prometheus exposition, parsed back, on the memory store and a real
memcached; one scrape's round trips; the store down; the same auth as the pages."""

from __future__ import annotations

import pytest
import webtest
from prometheus_client.parser import text_string_to_metric_families

import gaesignals
from gaesignals import SignalMapping, deliver, send
from gaesignals.dashboard import TOKEN_ENV, DashboardApp
from gaesignals.inspection import REPORTED
from gaesignals.stores import Store
from gaesignals.testing import CountingStore, DownStore
from tests.dashboard_support import HOSTILE_NAME, TOKEN, bearer, dead_letter

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(autouse=True)
def _no_token_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)


def scrape(app: webtest.TestApp) -> tuple[Samples, dict[str, str]]:
    """Every sample of one scrape by (name, sorted labels), and each family's type."""
    answer = app.get("/metrics", headers=bearer(), status=200)
    assert answer.headers["Content-Type"].startswith("text/plain; version=")
    samples: Samples = {}
    kinds = {}
    for family in text_string_to_metric_families(answer.text):
        kinds[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, kinds


def of(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


@pytest.mark.parametrize("store_kind", ["memory", "memcached"])
def test_metrics_report_each_signal(store: Store) -> None:
    """Pending payloads and bytes, the oldest age, dead letters and every outcome's total."""
    gaesignals.declare("orders", reliable=True)
    for n in range(3):
        send("orders", n)
    deliver(SignalMapping({"orders": lambda data: None}), reliable=True)
    dead_letter("orders", "bad")
    send("orders", 3)
    send("orders", 4, delay=60)
    gaesignals.declare("idle")
    samples, kinds = scrape(webtest.TestApp(DashboardApp(token=TOKEN)))
    assert samples[of("gaesignals_store_up")] == 1
    assert samples[of("gaesignals_pending_payloads", signal="orders")] == 2  # due and delayed
    assert samples[of("gaesignals_dead_letters", signal="orders")] == 1
    assert samples[of("gaesignals_payloads_total", signal="orders", outcome="sent")] == 6
    assert samples[of("gaesignals_payloads_total", signal="orders", outcome="delivered")] == 3
    assert samples[of("gaesignals_payloads_total", signal="orders", outcome="dead_lettered")] == 1
    assert samples[of("gaesignals_pending_payloads", signal="idle")] == 0
    assert samples[of("gaesignals_oldest_pending_seconds", signal="idle")] == 0
    for outcome in REPORTED:
        assert of("gaesignals_payloads_total", signal="idle", outcome=outcome) in samples
    assert kinds["gaesignals_payloads"] == "counter"
    assert kinds["gaesignals_pending_payloads"] == "gauge"


@pytest.mark.parametrize("store_kind", ["memory", "memcached"])
def test_pending_bytes_and_age(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes are the queue's size; the oldest age counts from the oldest due payload."""
    clock = [1_800_000_000.0]
    monkeypatch.setattr(gaesignals.frames, "clock", lambda: clock[0])
    send("aged", "x" * 100)
    clock[0] += 42
    send("aged", "y")
    samples, _ = scrape(webtest.TestApp(DashboardApp(["aged"], token=TOKEN)))
    expected = gaesignals.pending("aged")["aged"]
    assert samples[of("gaesignals_pending_payloads", signal="aged")] == 2
    assert samples[of("gaesignals_pending_bytes", signal="aged")] == expected.bytes > 100
    assert samples[of("gaesignals_oldest_pending_seconds", signal="aged")] == pytest.approx(42)


def test_one_scrape_is_two_round_trips_however_many_signals(gaesignals_store: Store) -> None:
    """A scrape of 500 signals reads the queues in one batch and the rest in one more."""
    counting = CountingStore(gaesignals_store)
    gaesignals.configure(store=counting)
    names = [f"s{n}" for n in range(500)]
    for name in names[:10]:
        send(name, 1)
    app = webtest.TestApp(DashboardApp(names, token=TOKEN))
    counting.calls.clear()
    samples, _ = scrape(app)
    assert dict(counting.calls) == {"scan_many": 1, "gets_many": 1}
    assert sum(v for (n, _), v in samples.items() if n == "gaesignals_pending_payloads") == 10


def test_label_values_are_escaped(gaesignals_store: Store) -> None:
    """Names holding quotes, backslashes, newlines and HTML come back intact from the parser."""
    name = HOSTILE_NAME + '\\ \n "quoted"'
    send(name, 1)
    samples, _ = scrape(webtest.TestApp(DashboardApp([name], token=TOKEN)))
    assert samples[of("gaesignals_pending_payloads", signal=name)] == 1


def test_a_store_that_is_down_is_store_up_0(gaesignals_store: Store) -> None:
    """With the store down a scrape still answers 200: store_up 0 and no signal samples."""
    app = webtest.TestApp(DashboardApp(["a", "b"], token=TOKEN))
    gaesignals.configure(store=DownStore())
    samples, _ = scrape(app)
    assert samples == {of("gaesignals_store_up"): 0}


def test_no_signals_still_tells_whether_the_store_is_up(gaesignals_store: Store) -> None:
    """With nothing registered, one small read gives store_up."""
    counting = CountingStore(gaesignals_store)
    gaesignals.configure(store=counting)
    samples, _ = scrape(webtest.TestApp(DashboardApp(token=TOKEN)))
    assert samples == {of("gaesignals_store_up"): 1}
    assert dict(counting.calls) == {"gets_many": 1}


def test_metrics_need_the_token(gaesignals_store: Store) -> None:
    """/metrics takes the same bearer token as the rest; without it, a 401."""
    app = webtest.TestApp(DashboardApp(token=TOKEN))
    app.get("/metrics", status=401)
    app.get("/metrics", headers=bearer("w" * 40), status=401)
    answer = app.get("/metrics", headers=bearer(), status=200)
    assert "Set-Cookie" not in answer.headers  # a scraper gets no cookie


def test_health_reports_dead_letters(gaesignals_store: Store) -> None:
    """health() reads as overview() does, and now reports each signal's dead letters."""
    dead_letter("h", 1)
    report = gaesignals.health(["h"])
    assert report["ok"] is True and report["signals"]["h"]["dead_letters"] == 1

"""``/metrics``: the signals in Prometheus text format, read in one batch per scrape.

A custom collector over a private registry: each scrape calls :func:`gaesignals.inspection.overview`
once for every signal the dashboard shows (two round trips to the store, whatever the number
of signals), and ``prometheus_client`` writes the exposition. Nothing is kept between scrapes:
the counters are the store's, so every process serving ``/metrics`` reports the same numbers.
A store that is down gives ``gaesignals_store_up 0`` and no per-signal samples, never an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .._extras import requires
from ..inspection import REPORTED, overview

with requires("dashboard"):
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["CONTENT_TYPE_LATEST", "SignalsCollector", "metrics_registry"]


class SignalsCollector:
    """Collects the gauges and counters of the signals ``names()`` returns at each scrape."""

    def __init__(self, names: Callable[[], list[str]]) -> None:
        self._names = names

    def collect(self) -> Iterable[Metric]:
        found = overview(self._names())
        up = GaugeMetricFamily(
            "gaesignals_store_up", "Whether the store answered this scrape (1) or not (0)."
        )
        up.add_metric([], 1.0 if found.reachable else 0.0)
        gauges = {
            "pending_payloads": "Payloads pending, due or delayed.",
            "pending_bytes": "Bytes the pending payloads take in the store.",
            "oldest_pending_seconds": "Seconds since the oldest due payload was due (0: none).",
            "dead_letters": "Dead letters kept.",
            "debounced_payloads": "Pending payloads waiting behind a debounce.",
        }
        families = {
            key: GaugeMetricFamily(f"gaesignals_{key}", text, labels=["signal"])
            for key, text in gauges.items()
        }
        total = CounterMetricFamily(
            "gaesignals_payloads",
            "Payloads by what happened to them (the store's best-effort counters).",
            labels=["signal", "outcome"],
        )
        for signal, report in found.signals.items():
            name = label(signal)
            backlog = report.pending
            families["pending_payloads"].add_metric([name], backlog.count)
            families["pending_bytes"].add_metric([name], backlog.bytes)
            families["oldest_pending_seconds"].add_metric([name], backlog.oldest_age or 0.0)
            families["dead_letters"].add_metric([name], report.dead_letters)
            families["debounced_payloads"].add_metric([name], backlog.debounced)
            for outcome in REPORTED:
                total.add_metric([name, outcome], report.counters[outcome])
        return [up, *families.values(), total]


def label(name: str) -> str:
    """``name`` as a label value: a lone surrogate (a name from JSON can hold one) as its
    escape, ``\\ud800``, since the exposition must be UTF-8."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def metrics_registry(names: Callable[[], list[str]]) -> CollectorRegistry:
    """A private registry holding only the signals' collector (no process or GC metrics of
    the default registry: several apps in a process would report them twice)."""
    registry = CollectorRegistry()
    registry.register(SignalsCollector(names))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)

"""What the delivery tests share: a signal's queue key, a handler that collects, and the
metrics the library recorded."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from gaesignals import tracing
from gaesignals.config import get_settings
from gaesignals.keys import signal_keys


def queue_key(name: str) -> str:
    """The queue key of signal ``name`` under the current settings."""
    return signal_keys(name, get_settings().namespace).queue


def collect() -> tuple[list[Any], Any]:
    """A list and a handler that appends each payload it is given to it."""
    got: list[Any] = []
    return got, got.append


class Metrics:
    """The OpenTelemetry counters the library recorded during one test (SDK, in memory)."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])

    def of(self, outcome: str) -> dict[str, int]:
        """Each signal's count of ``gaesignals.payloads.<outcome>``."""
        data = self.reader.get_metrics_data()
        values: dict[str, int] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == f"gaesignals.payloads.{outcome}":
                        for point in metric.data.data_points:
                            values[str(point.attributes[tracing.DESTINATION])] = point.value
        return values

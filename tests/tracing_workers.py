"""Child processes of the cross-process tracing test (``tests/test_tracing_processes.py``): a
sender and a deliverer on one memcached, each with its own global SDK tracer provider, writing
the spans it finished to ``<path>.spans.json``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import gaesignals
from gaesignals import deliver, send, tracing
from gaesignals.config import store_from_url

from .concurrency_workers import SECRET_KEY, child

NAME = "traced"


class JsonFileExporter(SpanExporter):
    """Keeps every finished span as a dict, written to a JSON file at shutdown."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.spans: list[dict[str, Any]] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            context = span.get_span_context()
            assert context is not None
            self.spans.append(
                {
                    "name": span.name,
                    "kind": span.kind.name,
                    "trace_id": f"{context.trace_id:032x}",
                    "span_id": f"{context.span_id:016x}",
                    "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
                    "links": [f"{link.context.span_id:016x}" for link in span.links],
                    "attributes": dict(span.attributes or {}),
                    "payload": (span.attributes or {}).get("test.payload"),
                }
            )
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        Path(self.path).write_text(json.dumps(self.spans))


def install(path: str) -> TracerProvider:
    """A global SDK tracer provider exporting to ``<path>.spans.json``."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonFileExporter(path + ".spans.json")))
    trace.set_tracer_provider(provider)
    return provider


def sender(path: str, seconds: float, url: str) -> None:
    """Send one payload before any provider is set (it must carry nothing), then set the
    global provider and send one inside a request span."""
    with child(path + ".error", path + ".log"):
        store = store_from_url(url)
        gaesignals.configure(store=store, secret_key=SECRET_KEY)
        try:
            send(NAME, "untraced")
            assert not tracing.active()
            provider = install(path)
            with trace.get_tracer("app").start_as_current_span("request"):
                send(NAME, "traced")
            provider.shutdown()
        finally:
            store.close()


def deliverer(path: str, seconds: float, url: str, reliable: bool) -> None:
    """Deliver both payloads inside a span of its own; each handler notes which payload its
    span processed."""
    with child(path + ".error", path + ".log"):
        store = store_from_url(url)
        gaesignals.configure(store=store, secret_key=SECRET_KEY)
        provider = install(path)

        def handler(data: str) -> None:
            trace.get_current_span().set_attribute("test.payload", data)

        try:
            with trace.get_tracer("cron").start_as_current_span("deliver"):
                assert deliver({NAME: handler}, reliable=reliable) == 2
        finally:
            store.close()
            provider.shutdown()

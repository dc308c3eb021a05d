"""A browser call's ``traceparent`` (:mod:`gaesignals.browser.calls`): the spans of its
handlers, run at once or sent and delivered later, belong to the browser's trace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import gaesignals
from gaesignals import deliver, tracing
from gaesignals.browser import BrowserCall
from gaesignals.stores import Store

from .support import SECRET, bridge_app, call

pytestmark = pytest.mark.gaesignals_config(secret_key=SECRET)

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
BROWSER_SPAN = 0xB7AD6B7169203331
TRACEPARENT = f"00-{TRACE_ID:032x}-{BROWSER_SPAN:016x}-01"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """An SDK tracer provider used by the library for one test; its finished spans."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use()
        provider.shutdown()


def test_a_call_run_at_once_has_its_handlers_span_in_the_browsers_trace(
    gaesignals_store: Store, exporter: InMemorySpanExporter
) -> None:
    """With ``delayed=False`` the handlers run in a ``process`` span whose parent is the
    browser's span, and the handler's own spans are its children."""
    seen: list[int] = []

    def greet(call: BrowserCall) -> None:
        seen.append(tracing.trace.get_current_span().get_span_context().trace_id)

    gaesignals.connect("greet", greet)
    gaesignals.declare("greet", from_browser=True, delayed=False)
    call(bridge_app(), "greet", 1, traceparent=TRACEPARENT, status=200)
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "process greet"]
    assert span.context.trace_id == TRACE_ID and seen == [TRACE_ID]
    assert span.parent is not None and span.parent.span_id == BROWSER_SPAN


def test_a_deferred_call_carries_the_trace_through_the_cache(
    gaesignals_store: Store, exporter: InMemorySpanExporter
) -> None:
    """By default the call's send is a PRODUCER span child of the browser's, and the later
    delivery's CONSUMER span is that send's child: one trace from the click to the handler."""
    gaesignals.connect("greet", lambda call: None)
    gaesignals.declare("greet", from_browser=True)
    call(bridge_app(), "greet", 1, traceparent=TRACEPARENT, status=200)
    deliver()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    producer, consumer = spans["send greet"], spans["process greet"]
    assert producer.kind == SpanKind.PRODUCER and producer.context.trace_id == TRACE_ID
    assert producer.parent is not None and producer.parent.span_id == BROWSER_SPAN
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id


def test_a_call_without_traceparent_starts_no_trace_of_the_browsers(
    gaesignals_store: Store, exporter: InMemorySpanExporter
) -> None:
    """Without the header a deferred call's send is outside any span (as any send outside a
    request span): nothing claims a browser parent."""
    gaesignals.declare("greet", from_browser=True)
    call(bridge_app(), "greet", 1, status=200)
    assert [s for s in exporter.get_finished_spans() if s.name == "send greet"] == []

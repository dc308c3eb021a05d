"""OpenTelemetry (:mod:`gaesignals.tracing`): spans from send to handler, the trace context
in signed frame metadata, the outcome metrics, and nothing at all without a provider.

The SDK's providers are given to the library through :func:`gaesignals.tracing.use`, never set
as the API's globals (those can be set once per process, and would make every other test's
frames carry a trace context). In other processes: test_tracing_processes.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import gaesignals
from gaesignals import Reject, deliver, frames, send, send_multi, tracing
from gaesignals.config import get_settings
from gaesignals.keys import signal_keys
from gaesignals.stores.memory import MemoryStore

from .tracing_support import MODES

SECRET = "tracing-tests-secret-key-0123456789abcdef"


class Recorded:
    """The spans and metrics the library recorded during one test."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        #: The application's own tracer, for the request span a send happens in.
        self.app = self.tracer_provider.get_tracer("app")

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        found = self.exporter.get_finished_spans()
        return [span for span in found if name is None or span.name == name]

    def span(self, name: str) -> ReadableSpan:
        (found,) = self.spans(name)
        return found

    def metric(self, name: str) -> dict[str, Any]:
        """Each signal's value of a counter, or the (count, sum) of a histogram."""
        data = self.reader.get_metrics_data()
        values: dict[str, Any] = {}
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        signal = point.attributes[tracing.DESTINATION]
                        value = getattr(point, "value", None)
                        values[signal] = (point.count, point.sum) if value is None else value
        return values


@pytest.fixture
def otel() -> Iterator[Recorded]:
    """SDK providers in use by the library for one test, then none again."""
    recorded = Recorded()
    tracing.use(recorded.tracer_provider, recorded.meter_provider)
    try:
        yield recorded
    finally:
        tracing.use()
        recorded.tracer_provider.shutdown()
        recorded.meter_provider.shutdown()


def queue_value(name: str) -> bytes:
    key = signal_keys(name, get_settings().namespace).queue
    with get_settings().store.connection() as conn:
        item = conn.gets_many([key]).get(key)
    return b"" if item is None else item[0]


def only_frame(name: str) -> frames.Frame:
    found, bad = frames.parse(
        queue_value(name),
        signal_keys(name, get_settings().namespace).queue.encode(),
        get_settings().secret_keys,
    )
    assert bad == []
    (frame,) = found
    return frame


def test_without_a_provider_nothing_is_active_and_frames_carry_nothing(
    memory: MemoryStore,
) -> None:
    """With no provider in use (none given, no global one set), a send inside an
    application's span adds no metadata: its frame is the same as before tracing existed."""
    app = TracerProvider().get_tracer("app")
    with app.start_as_current_span("request"):
        send("quiet", {"n": 1})
    assert not tracing.active()
    assert only_frame("quiet").meta == b""


def test_a_send_in_a_span_records_a_producer_span_and_carries_its_context(
    memory: MemoryStore, otel: Recorded
) -> None:
    """A send inside a span records a PRODUCER span ``send <signal>``, child of that span,
    with the messaging attributes and the frame id as the message id; the frame carries its
    W3C ``traceparent``."""
    with otel.app.start_as_current_span("request") as request:
        send("signup", {"user": 7})
    span = otel.span("send signup")
    frame = only_frame("signup")
    assert span.kind is SpanKind.PRODUCER
    assert span.parent is not None
    assert span.parent.span_id == request.get_span_context().span_id
    assert dict(span.attributes or {}) == {
        "messaging.system": "gaesignals",
        "messaging.destination.name": "signup",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.message.id": frame.ident.hex(),
    }
    carrier = tracing.carrier_of(frame)
    context = span.get_span_context()
    assert carrier["traceparent"].startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")


def test_a_send_outside_any_span_records_nothing_and_carries_nothing(
    memory: MemoryStore, otel: Recorded
) -> None:
    """Outside any span a send is no trace of its own: no span, no metadata, but it is
    counted as sent."""
    send("background", 1)
    assert otel.spans() == []
    assert only_frame("background").meta == b""
    assert otel.metric("gaesignals.payloads.sent") == {"background": 1}


@MODES
def test_handlers_run_in_a_consumer_span_whose_parent_is_the_send(
    memory: MemoryStore, otel: Recorded, reliable: bool
) -> None:
    """Delivery runs each payload's handlers in a CONSUMER span ``process <signal>`` whose
    parent is the send's span (one trace from the request to the handler), linked to the
    delivery's own span, with the messaging attributes."""
    with otel.app.start_as_current_span("request"):
        send("signup", {"user": 7})
    frame = only_frame("signup")
    seen: list[int] = []
    with otel.app.start_as_current_span("cron") as cron:
        assert deliver({"signup": lambda data: seen.append(data["user"])}, reliable=reliable) == 1
    assert seen == [7]
    producer, consumer = otel.span("send signup"), otel.span("process signup")
    assert consumer.kind is SpanKind.CONSUMER
    assert consumer.context.trace_id == producer.context.trace_id
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert [link.context.span_id for link in consumer.links] == [cron.get_span_context().span_id]
    assert dict(consumer.attributes or {}) == {
        "messaging.system": "gaesignals",
        "messaging.destination.name": "signup",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.id": frame.ident.hex(),
    }
    assert consumer.status.status_code is StatusCode.UNSET


def test_a_payload_sent_untraced_is_processed_in_a_child_of_the_delivery_span(
    memory: MemoryStore, otel: Recorded
) -> None:
    """A payload that carries no trace context is processed in a CONSUMER span under the
    delivery's own span (no link: it is the parent)."""
    send("plain", 1)
    with otel.app.start_as_current_span("cron") as cron:
        deliver({"plain": lambda data: None})
    consumer = otel.span("process plain")
    assert consumer.parent is not None
    assert consumer.parent.span_id == cron.get_span_context().span_id
    assert consumer.links == ()


@MODES
def test_a_handlers_own_spans_nest_under_its_consumer_span(
    memory: MemoryStore, otel: Recorded, reliable: bool
) -> None:
    """A span a handler starts is a child of the payload's CONSUMER span."""
    with otel.app.start_as_current_span("request"):
        send("work", 1)

    def handler(data: int) -> None:
        with otel.app.start_as_current_span("handler work"):
            pass

    deliver({"work": handler}, reliable=reliable)
    inner, consumer = otel.span("handler work"), otel.span("process work")
    assert inner.parent is not None and inner.parent.span_id == consumer.context.span_id
    assert inner.context.trace_id == otel.span("send work").context.trace_id


def test_a_coroutine_handlers_own_spans_nest_under_its_consumer_span(
    memory: MemoryStore, otel: Recorded
) -> None:
    """An ``async def`` handler sees its payload's CONSUMER span as current, whether the
    synchronous deliver runs it on a loop of its own or adeliver awaits it on the caller's."""
    with otel.app.start_as_current_span("request"):
        send("work", 1)
        send("work", 2)

    async def handler(data: int) -> None:
        with otel.app.start_as_current_span(f"handler work {data}"):
            pass

    assert deliver({"work": handler}) == 2
    consumers = otel.spans("process work")  # in the order they ended: payload 1's first
    for data, consumer in zip((1, 2), consumers, strict=True):
        inner = otel.span(f"handler work {data}")
        assert inner.parent is not None and inner.parent.span_id == consumer.context.span_id

    with otel.app.start_as_current_span("request"):
        send("work", 3)
    assert asyncio.run(gaesignals.adeliver({"work": handler})) == 1
    inner, consumer = otel.span("handler work 3"), otel.spans("process work")[-1]
    assert inner.parent is not None and inner.parent.span_id == consumer.context.span_id


@MODES
def test_a_failing_handler_is_recorded_on_the_consumer_span(
    memory: MemoryStore, otel: Recorded, reliable: bool
) -> None:
    """A handler that raises leaves its exception as an event on the payload's span, whose
    status is ERROR; the next handler still runs."""
    with otel.app.start_as_current_span("request"):
        send("fragile", 1)
    ran: list[str] = []

    def broken(data: int) -> None:
        raise KeyError("no such user")

    deliver({"fragile": [broken, lambda data: ran.append("second")]}, reliable=reliable)
    consumer = otel.span("process fragile")
    assert ran == ["second"]
    assert consumer.status.status_code is StatusCode.ERROR
    (event,) = consumer.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.type"] == "KeyError"


def test_send_multi_records_a_batch_span_and_a_create_span_per_payload(
    memory: MemoryStore, otel: Recorded
) -> None:
    """``send_multi`` in a span records a CLIENT ``send`` span for the batch and, under it, a
    PRODUCER ``create <signal>`` span per payload, whose context that payload carries: each
    payload's CONSUMER span is a child of its own create span."""
    with otel.app.start_as_current_span("request"):
        send_multi([("a", 1), ("a", 2), ("b", 3)])
    batch = otel.span("send")
    created = otel.spans("create a") + otel.spans("create b")
    assert batch.kind is SpanKind.CLIENT
    assert (batch.attributes or {})["messaging.batch.message_count"] == 3
    assert "messaging.destination.name" not in (batch.attributes or {})
    assert all(span.kind is SpanKind.PRODUCER for span in created)
    assert all(span.parent and span.parent.span_id == batch.context.span_id for span in created)
    deliver({"a": lambda data: None, "b": lambda data: None})
    parents = sorted(span.parent.span_id for span in otel.spans() if span.name.startswith("proc")
                     if span.parent)  # fmt: skip
    assert parents == sorted(span.context.span_id for span in created)
    assert otel.metric("gaesignals.payloads.sent") == {"a": 2, "b": 1}


def test_a_retried_payload_keeps_its_trace_context(
    memory: MemoryStore, otel: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reliable payload rescheduled after a failure (its metadata rewritten) still carries
    the send's context: its next attempt's span is in the same trace, under the same send."""
    now = [1_800_000_000.0]
    monkeypatch.setattr(frames, "clock", lambda: now[0])
    gaesignals.declare("flaky", reliable=True, retry_delay=5)
    with otel.app.start_as_current_span("request"):
        send("flaky", 1)
    calls: list[int] = []

    def handler(data: int) -> None:
        calls.append(data)
        if len(calls) == 1:
            raise RuntimeError("first time")

    assert deliver({"flaky": handler}) == 0
    now[0] += 6
    assert deliver({"flaky": handler}) == 1
    producer = otel.span("send flaky")
    first, second = otel.spans("process flaky")
    assert first.status.status_code is StatusCode.ERROR
    assert second.status.status_code is StatusCode.UNSET
    for span in (first, second):
        assert span.parent is not None and span.parent.span_id == producer.context.span_id


def test_with_a_secret_key_the_trace_context_is_signed(memory: MemoryStore, otel: Recorded) -> None:
    """With a secret key, the trace entry is covered by the frame's signature: a frame whose
    trace context was rewritten (and its CRC made right) fails verification, runs no handler
    and makes no span under the forged parent."""
    gaesignals.configure(store=memory, secret_key=SECRET)
    with otel.app.start_as_current_span("request"):
        send("signed", 1)
    frame = only_frame("signed")
    key = signal_keys("signed", get_settings().namespace).queue
    value = queue_value("signed")
    real = tracing.carrier_of(frame)["traceparent"]
    forged = "00-" + "ab" * 16 + real[35:]
    memory.set_raw(key, frames.reseal(value.replace(real.encode(), forged.encode())))
    got: list[int] = []
    with otel.app.start_as_current_span("cron"):
        assert deliver({"signed": got.append}) == 0
    assert got == []
    assert otel.spans("process signed") == []


def test_an_unreadable_trace_context_is_ignored(memory: MemoryStore, otel: Recorded) -> None:
    """A frame whose trace entry holds no valid ``traceparent`` is delivered as usual, in a
    span under the delivery's own (nothing of the garbage is trusted as a parent)."""
    keys = signal_keys("odd", get_settings().namespace)
    meta = tracing.carried({"traceparent": "00-zz-not-a-context"})
    raw = frames.encode(b"\x80\x05K\x01.", keys.queue.encode(), meta=meta)
    memory.set_raw(keys.queue, raw)
    got: list[int] = []
    with otel.app.start_as_current_span("cron") as cron:
        assert deliver({"odd": got.append}) == 1
    assert got == [1]
    consumer = otel.span("process odd")
    assert consumer.parent is not None
    assert consumer.parent.span_id == cron.get_span_context().span_id


def test_a_trace_context_too_long_keeps_its_traceparent() -> None:
    """A carrier longer than one metadata entry keeps ``traceparent`` and leaves out what
    does not fit."""
    parent = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    entry = tracing.carried({"tracestate": "x=" + "y" * 300, "traceparent": parent})
    found = frames.metadata(entry)
    assert found is not None
    assert found[frames.META_TRACE] == b"traceparent:" + parent.encode()


def test_outcomes_are_counted_by_signal(
    memory: MemoryStore, otel: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The counters say how many payloads of each signal were sent, delivered, failed,
    dead-lettered, dropped (unreadable), expired (past their ttl) and lost (gone from the
    cache before any delivery)."""
    now = [1_800_000_000.0]
    monkeypatch.setattr(frames, "clock", lambda: now[0])
    for n in range(3):
        send("ok", n)
    send("bad", 1)
    send("dead", 1)
    gaesignals.declare("dead", reliable=True, max_attempts=1)
    deliver({"ok": lambda data: None, "bad": _raise, "dead": _reject})
    gaesignals.declare("old", ttl=10)
    send("old", 1)
    now[0] += 60
    key = signal_keys("broken", get_settings().namespace).queue
    damaged = frames.encode(b"\x80\x05K\x01.", key.encode())
    memory.set_raw(key, damaged[:-1] + bytes([damaged[-1] ^ 1]))  # its CRC no longer holds
    send("gone", 1)
    send("gone", 2)
    memory.set_raw(signal_keys("gone", get_settings().namespace).queue, b"")
    deliver({"old": lambda data: None, "broken": lambda data: None, "gone": lambda data: None})
    metric = otel.metric
    assert metric("gaesignals.payloads.sent") == {"ok": 3, "bad": 1, "dead": 1, "old": 1, "gone": 2}
    assert metric("gaesignals.payloads.delivered") == {"ok": 3}
    assert metric("gaesignals.payloads.failed") == {"bad": 1, "dead": 1}
    assert metric("gaesignals.payloads.dead_lettered") == {"dead": 1}
    assert metric("gaesignals.payloads.expired") == {"old": 1}
    assert metric("gaesignals.payloads.dropped") == {"broken": 1}
    assert metric("gaesignals.payloads.lost") == {"gone": 2}


def _raise(data: object) -> None:
    raise ValueError("no")


def _reject(data: object) -> None:
    raise Reject("never")


def test_delivery_duration_and_age_are_measured(
    memory: MemoryStore, otel: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each payload handled adds its handlers' run time and its age since its send (on the
    library's clock) to the histograms."""
    now = [1_800_000_000.0]
    monkeypatch.setattr(frames, "clock", lambda: now[0])
    send("timed", 1)
    send("timed", 2)
    now[0] += 30
    deliver({"timed": lambda data: None})
    count, total = otel.metric("gaesignals.delivery.age")["timed"]
    assert (count, total) == (2, 60.0)
    count, total = otel.metric("gaesignals.delivery.duration")["timed"]
    assert count == 2 and 0 <= total < 5

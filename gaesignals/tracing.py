"""OpenTelemetry traces and metrics of sends and deliveries, once a provider is configured.

Only ``opentelemetry-api`` is used (the ``otel`` extra); without it, or with no tracer and no
meter provider set, nothing is recorded and nothing is added to a frame, so a send costs what
it did. A provider set later is noticed at the next send or delivery: the API keeps its global
provider in a module variable, read here as its own proxies read it, because asking
``get_tracer_provider()`` consults ``os.environ`` each time, a cost every send would pay. The
API is imported only once the application has imported it (or names a provider in the
environment): an installed API nobody uses costs no import time.

A send inside a span records a PRODUCER span and carries the W3C trace context (what the
global propagator injects) in its frame's metadata (type :data:`~gaesignals.frames.META_TRACE`),
signed with the rest when a secret key is set. A delivery runs each payload's handlers inside a
CONSUMER span whose parent is that context, linked to the delivery's own span. Names and
attributes follow the messaging semantic conventions (``send <signal>``, ``process <signal>``,
``messaging.operation.type``...); metrics go to a meter named ``gaesignals``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from . import frames
from ._extras import requires

if TYPE_CHECKING:
    import opentelemetry.metrics._internal as _metrics_state
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, propagate, trace
    from opentelemetry.metrics import Counter, Histogram, MeterProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

#: Whether ``opentelemetry-api`` is installed (the ``otel`` extra); without it every function
#: here does nothing.
AVAILABLE = importlib.util.find_spec("opentelemetry") is not None
#: What the API reads to make a provider of its own, with no ``set_*_provider`` call.
TRACER_ENV, METER_ENV = "OTEL_PYTHON_TRACER_PROVIDER", "OTEL_PYTHON_METER_PROVIDER"
#: Whether the API's modules are bound here (:func:`_bind`).
_bound = False


def _bind() -> None:
    """Import the API's modules into this one. Done only once the application has imported
    the API itself (a provider cannot be set without it), when a provider is named in the
    environment, or when :func:`use` is given one: an installed API left unused (google-api-core
    brings it to every App Engine app) then costs no import time at a cold start."""
    global _bound, _metrics_state, otel_context, metrics, propagate, trace
    with requires("otel"):  # reached without the API only when use() is given providers
        import opentelemetry.metrics._internal as _metrics_state
        from opentelemetry import context as otel_context
        from opentelemetry import metrics, propagate, trace

    _bound = True


def _bound_if_imported() -> bool:
    """Whether the API's modules are bound here, binding them if the application has
    imported the API (then :func:`_bind` costs nothing)."""
    if not _bound and (
        "opentelemetry.trace" in sys.modules or "opentelemetry.metrics" in sys.modules
    ):
        _bind()
    return _bound


#: The outcomes counted, each a counter ``gaesignals.payloads.<outcome>``: a delivery reports
#: its own through :mod:`gaesignals.delivery.outcomes`, sending counts ``sent`` and the lost
#: check ``lost``.
SENT = "sent"
DELIVERED = "delivered"
FAILED = "failed"
RETRIED = "retried"
DEAD_LETTERED = "dead_lettered"
DROPPED = "dropped"
EXPIRED = "expired"
LOST = "lost"
COALESCED = "coalesced"
CANCELLED = "cancelled"
PURGED = "purged"
OUTCOMES = (
    SENT,
    DELIVERED,
    FAILED,
    RETRIED,
    DEAD_LETTERED,
    DROPPED,
    EXPIRED,
    LOST,
    COALESCED,
    CANCELLED,
    PURGED,
)

SYSTEM = "gaesignals"
DESTINATION = "messaging.destination.name"
#: The longest trace context carried: one metadata entry (what does not fit is left out,
#: ``traceparent`` first in).
MAX_CONTEXT = 255


class Instruments:
    """The counters and histograms, made once on the meter ``gaesignals``."""

    def __init__(self, provider: MeterProvider) -> None:
        meter = provider.get_meter("gaesignals")
        self.counters: dict[str, Counter] = {
            outcome: meter.create_counter(
                f"gaesignals.payloads.{outcome}",
                unit="{payload}",
                description=f"Payloads {outcome.replace('_', '-')}, by signal",
            )
            for outcome in OUTCOMES
        }
        self.duration: Histogram = meter.create_histogram(
            "gaesignals.delivery.duration",
            unit="s",
            description="How long one payload's handlers ran",
        )
        self.age: Histogram = meter.create_histogram(
            "gaesignals.delivery.age",
            unit="s",
            description="From a payload's send (whole seconds) to its handlers' start",
        )


class _State:
    """What this process records with: made when a provider is first seen, then kept (the
    API's global providers can be set only once). :func:`use` replaces them."""

    def __init__(self) -> None:
        self.tracer: Tracer | None = None
        self.instruments: Instruments | None = None
        #: Explicit providers (:func:`use`), in place of the global ones.
        self.tracer_provider: TracerProvider | None = None
        self.meter_provider: MeterProvider | None = None
        #: Whether to look at the API's globals again (False once both were decided).
        self.looking = AVAILABLE
        self.env_tracer = AVAILABLE and TRACER_ENV in os.environ
        self.env_meter = AVAILABLE and METER_ENV in os.environ
        if (self.env_tracer or self.env_meter) and not _bound:
            _bind()
        self.tracer_decided = self.meter_decided = False

    def look(self) -> bool:
        """Whether a provider was set since the last look (then the instruments are made)."""
        if not _bound_if_imported():
            return False
        if not self.tracer_decided and (trace._TRACER_PROVIDER is not None or self.env_tracer):
            provider = trace.get_tracer_provider()
            self.tracer_decided = True  # set once: what it is now it stays
            if not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
                self.tracer = provider.get_tracer("gaesignals")
        if not self.meter_decided and (
            _metrics_state._METER_PROVIDER is not None or self.env_meter
        ):
            meters = metrics.get_meter_provider()
            self.meter_decided = True
            if not isinstance(
                meters, _metrics_state._ProxyMeterProvider | metrics.NoOpMeterProvider
            ):
                self.instruments = Instruments(meters)
        self.looking = not (self.tracer_decided and self.meter_decided)
        return self.tracer is not None or self.instruments is not None


_state = _State()


def use(
    tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None
) -> None:
    """Record with these providers instead of the global ones; ``use()`` goes back to the
    globals. For an application that keeps its providers out of the API's globals, and for
    tests (a global provider can be set only once per process)."""
    global _state
    if (tracer_provider is not None or meter_provider is not None) and not _bound:
        _bind()
    state = _state = _State()  # back to the globals, looked at anew
    state.tracer_provider, state.meter_provider = tracer_provider, meter_provider
    if tracer_provider is not None:
        state.tracer = tracer_provider.get_tracer("gaesignals")
        state.tracer_decided = True
    if meter_provider is not None:
        state.instruments = Instruments(meter_provider)
        state.meter_decided = True
    state.looking = AVAILABLE and not (state.tracer_decided and state.meter_decided)


def active() -> bool:
    """Whether anything is recorded: a tracer or a meter provider is set. Cheap: this runs
    on every send."""
    state = _state
    if state.tracer is not None or state.instruments is not None:
        return True
    if not state.looking or not _bound_if_imported():
        return False  # (without the API imported, no provider can have been set)
    if (
        trace._TRACER_PROVIDER is None
        and _metrics_state._METER_PROVIDER is None
        and not (state.env_tracer or state.env_meter)
    ):
        return False  # the usual case without a provider: two module globals read
    return state.look()


def count(outcome: str, name: str, n: int = 1) -> None:
    """Count ``n`` payloads of signal ``name`` that met ``outcome`` (one of :data:`OUTCOMES`)."""
    instruments = _state.instruments
    if instruments is None and _state.looking and _state.look():
        instruments = _state.instruments
    if instruments is not None and n > 0:
        instruments.counters[outcome].add(n, {DESTINATION: name})


# -- the trace context in a frame ---------------------------------------------------------------


def carried(carrier: dict[str, str]) -> bytes:
    """The metadata entry carrying ``carrier`` (header name to value, as a propagator writes
    it); b"" when it is empty. Entries that would take it past :data:`MAX_CONTEXT` bytes are
    left out, ``traceparent`` kept first."""
    lines: list[bytes] = []
    size = -1
    for key in sorted(carrier, key=lambda k: k != "traceparent"):
        line = f"{key}:{carrier[key]}".encode("ascii", "replace")
        if b"\n" in line or size + 1 + len(line) > MAX_CONTEXT:
            continue
        lines.append(line)
        size += 1 + len(line)
    return frames.meta_entry(frames.META_TRACE, b"\n".join(lines)) if lines else b""


def carrier_of(frame: frames.Frame) -> dict[str, str]:
    """The trace context a frame carries (what :func:`carried` wrote), {} when none."""
    entries = frames.metadata(frame.meta) if frame.meta else None
    value = None if entries is None else entries.get(frames.META_TRACE)
    if not value:
        return {}
    carrier: dict[str, str] = {}
    for line in value.split(b"\n"):
        key, colon, rest = line.partition(b":")
        if colon and key and rest.isascii() and key.isascii():
            carrier[key.decode()] = rest.decode()
    return carrier


@contextmanager
def remote_parent(carrier: dict[str, str]) -> Iterator[None]:
    """Make the trace context ``carrier`` holds (a request's ``traceparent`` and
    ``tracestate`` headers) the current one inside, when anything is recorded: the spans of
    what a traced client's request runs are then its children."""
    if not carrier or not active():
        yield
        return
    token = otel_context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


# -- sending ------------------------------------------------------------------------------------


def _attributes(operation: str, name: str | None) -> dict[str, str | int]:
    found: dict[str, str | int] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
    }
    if name is not None:
        found[DESTINATION] = name
    return found


class Publish:
    """One observed send or send_multi: its spans, and the payloads it counts as sent.

    In a span, a send of one payload is one PRODUCER span (``send <signal>``) whose context
    the payload carries; a batch is a CLIENT span (``send``) with a PRODUCER ``create
    <signal>`` span per payload, ended once it is framed, whose context that payload carries.
    Outside any span nothing is traced (a send is not a trace of its own)."""

    def __init__(self, name: str | None) -> None:
        self.batch = name is None
        self.span: Span | None = None
        self.created: Span | None = None
        self.tracer = _state.tracer
        self.sent: dict[str, int] = {}
        #: The signals of the payloads framed, for a batch's attributes.
        self.names: set[str] = set()
        self.framed_count = 0
        if self.tracer is None or not trace.get_current_span().get_span_context().is_valid:
            self.tracer = None
        elif name is None:
            self.span = self.tracer.start_span(
                "send", kind=trace.SpanKind.CLIENT, attributes=_attributes("send", None)
            )
        else:
            self.span = self.tracer.start_span(
                f"send {name}", kind=trace.SpanKind.PRODUCER, attributes=_attributes("send", name)
            )

    def meta(self, name: str) -> bytes:
        """The metadata entry carrying the trace context of ``name``'s payload (b"": none)."""
        if self.span is None or self.tracer is None:
            return b""
        span = self.span
        if self.batch:
            span = self.created = self.tracer.start_span(
                f"create {name}",
                context=trace.set_span_in_context(self.span),
                kind=trace.SpanKind.PRODUCER,
                attributes=_attributes("create", name),
            )
            self.names.add(name)
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        return carried(carrier)

    def framed(self, frame: bytes) -> None:
        """Name the payload just framed by its id on its span (and end a batch's create span)."""
        self.framed_count += 1
        span = self.created if self.batch else self.span
        if span is not None:
            span.set_attribute("messaging.message.id", frame[12:20].hex())
        if self.created is not None:
            self.created.end()
            self.created = None

    def stored(self, name: str, n: int = 1) -> None:
        """``n`` payloads of ``name`` are in the store."""
        self.sent[name] = self.sent.get(name, 0) + n

    def finish_span(self) -> None:
        """Give a batch span what it learned (a created span left open by an error ends)."""
        if self.created is not None:
            self.created.end()
        if self.batch and self.span is not None:
            self.span.set_attribute("messaging.batch.message_count", self.framed_count)
            if len(self.names) == 1:
                self.span.set_attribute(DESTINATION, next(iter(self.names)))

    def count(self) -> None:
        for signal, n in self.sent.items():
            count(SENT, signal, n)


@contextmanager
def publishing(name: str | None = None) -> Iterator[Publish]:
    """Observe a send of ``name``'s payload (a send_multi: None); its span is the current one
    inside, and records its error; what it stored is counted once done, even on an error
    (a send_multi that fails for one signal stored the others')."""
    publish = Publish(name)
    try:
        if publish.span is None:
            yield publish
        else:
            with trace.use_span(publish.span, end_on_exit=True):
                try:
                    yield publish
                finally:
                    publish.finish_span()
    finally:
        publish.count()


# -- delivering ---------------------------------------------------------------------------------


class Process:
    """One payload's handlers observed: a CONSUMER span (``process <signal>``), current while
    they run, with the send's span as its parent and a link to the delivery's own span; and
    the duration and age histograms."""

    __slots__ = ("name", "span", "started", "token")

    def __init__(self, name: str) -> None:
        self.name = name
        self.span: Span | None = None
        self.token: object = None
        self.started = 0.0

    def enter(self, frame: frames.Frame | None) -> None:
        tracer = _state.tracer
        if tracer is not None:
            attributes = _attributes("process", self.name)
            if frame is not None:
                attributes["messaging.message.id"] = frame.ident.hex()
            parent = _sender(frame)
            own = trace.get_current_span().get_span_context()
            span = tracer.start_span(
                f"process {self.name}",
                context=parent,
                kind=trace.SpanKind.CONSUMER,
                attributes=attributes,
                links=[trace.Link(own)] if parent is not None and own.is_valid else None,
            )
            self.span = span
            self.token = otel_context.attach(trace.set_span_in_context(span, parent))
        instruments = _state.instruments
        if instruments is not None:
            if frame is not None:
                age = max(frames.clock() - frames.sent_at(frame.ident), 0.0)
                instruments.age.record(age, {DESTINATION: self.name})
            self.started = time.perf_counter()

    def failed(self, error: BaseException) -> None:
        """Record a handler's (or the decoding's) error on the span."""
        if self.span is not None:
            self.span.record_exception(error)
            self.span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))

    def exit(self) -> None:
        instruments = _state.instruments
        if instruments is not None and self.started:
            elapsed = time.perf_counter() - self.started
            instruments.duration.record(elapsed, {DESTINATION: self.name})
        if self.span is not None:
            otel_context.detach(self.token)  # type: ignore[arg-type]  # attach's own token
            self.span.end()


def _sender(frame: frames.Frame | None) -> otel_context.Context | None:
    """The context of the span that sent ``frame``, None when it carries no valid one."""
    carrier = carrier_of(frame) if frame is not None else {}
    if not carrier:
        return None
    parent = propagate.extract(carrier)
    return parent if trace.get_current_span(parent).get_span_context().is_valid else None


_current: ContextVar[Process | None] = ContextVar("gaesignals_process", default=None)


@contextmanager
def processing(name: str, frame: frames.Frame | None) -> Iterator[Process]:
    """Observe one payload's handlers (call only when :func:`active`)."""
    process = Process(name)
    process.enter(frame)
    token = _current.set(process)
    try:
        yield process
    finally:
        _current.reset(token)
        process.exit()


def failed(error: BaseException) -> None:
    """Record ``error`` (a handler's, caught and logged) on the payload's span, if observed."""
    if _state.tracer is not None:
        process = _current.get()
        if process is not None:
            process.failed(error)

"""Issue 17: what OpenTelemetry support costs a send when nothing is configured.

The same ``Signal.send`` timed, in the same run and alternating, with ``opentelemetry-api``
installed but no tracer or meter provider (as shipped), and with tracing made unavailable (the
module's state as it is when ``opentelemetry`` cannot be imported), on a real memcached and on
the in-memory store (no network: the strictest ratio). For information, a send traced by the
SDK (inside a span, spans to a processor that drops them) and the check a send makes alone.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from common import (
    PAYLOAD,
    Memcached,
    Row,
    Samples,
    arguments,
    compare,
    emit,
    library_store,
    loop_time,
    prepare,
    print_table,
    quiet_library,
    ratio_row,
    raw_client,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import gaesignals
from gaesignals import tracing
from gaesignals.keys import signal_keys
from gaesignals.stores.memory import MemoryStore

NAME = "bench_otel"
#: The issue's target: a send with the API installed and no provider, against one without.
LIMIT = 1.03


class Dropped(SpanExporter):
    def export(self, spans: object) -> SpanExportResult:
        return SpanExportResult.SUCCESS


@contextmanager
def unavailable() -> Iterator[None]:
    """The tracing module as it is when ``opentelemetry`` cannot be imported."""
    kept = tracing.AVAILABLE, tracing._state
    tracing.AVAILABLE = False
    tracing._state = tracing._State()
    try:
        yield
    finally:
        tracing.AVAILABLE, tracing._state = kept


def batch(total: int, chunk: int, reset: Callable[[], object], body: Callable[[], object]):
    """Seconds per call of ``body``, ``reset`` (untimed) before each chunk of calls."""

    def run() -> float:
        spent = 0.0
        for _ in range(total // chunk):
            reset()
            spent += loop_time(body, chunk)
        return spent / (total // chunk * chunk)

    return run


def cases(reset: Callable[[], object], total: int) -> dict[str, Callable[[], float]]:
    signal = gaesignals.Signal(NAME)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Dropped()))
    app = provider.get_tracer("app")

    def send() -> None:
        signal.send(PAYLOAD)

    def without() -> float:
        with unavailable():
            return batch(total, 50, reset, send)()

    def traced() -> float:
        tracing.use(provider)
        try:
            with app.start_as_current_span("request"):
                return batch(total, 50, reset, send)()
        finally:
            tracing.use()

    return {"no provider": batch(total, 50, reset, send), "unavailable": without, "traced": traced}


def rows_for(bench: str, got: dict[str, Samples]) -> list[Row]:
    store = bench.split("/")[1]
    return [
        ratio_row(bench, f"{store}: send, otel API installed, no provider", got["no provider"],
                  got["unavailable"], LIMIT, baseline_label="tracing unavailable"),
        ratio_row(bench, f"{store}: send, traced (in a span, SDK provider)", got["traced"],
                  got["unavailable"], None, baseline_label="tracing unavailable"),
    ]  # fmt: skip


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    pinning = prepare()
    quiet_library()
    total = 1000 if args.quick else 4000
    rows: list[Row] = []
    with Memcached() as server:
        gaesignals.configure(store=library_store(server.port))
        raw = raw_client(server.port)
        key = signal_keys(NAME, "").queue
        rows += rows_for(
            "otel/memcached", compare(cases(lambda: raw.set(key, b""), total), args.reps)
        )
    store = MemoryStore()
    gaesignals.configure(store=store)
    key = signal_keys(NAME, "").queue
    got = compare(cases(lambda: store.set_raw(key, b""), total), args.reps)
    rows += rows_for("otel/memory", got)
    check = min(timeit.repeat(tracing.active, number=100_000, repeat=5)) / 100_000
    rows.append(Row("otel/memory", "memory: the check a send makes (tracing.active), alone",
                    f"{check * 1e9:.0f} ns",
                    f"{check / got['unavailable'].median * 100:.2f} % of a send"))  # fmt: skip
    notes = [pinning, f"medians of {args.reps} repetitions of {total} sends each, 0 pending"]
    print_table("OpenTelemetry: the cost of a send (issue 17)", rows, notes)
    emit(args, rows)


if __name__ == "__main__":
    main()

"""The worker loop: deliver a mapping every ``--interval`` seconds until SIGTERM or SIGINT.

A signal lets the current delivery finish; the loop then prints a summary and exits 0. A store
outage is reported once, and retried with a pause that doubles up to ``--max-backoff``.

``--threads N`` runs N such loops in this process, ``--processes N`` N processes (started
afresh, each configured from the options and the environment) of ``--threads`` loops each:
deliverers that share a backlog, each taking a different part when ``--limit`` bounds a
delivery. With ``--limit``, a loop whose delivery delivered something delivers again at once
(there may be more), and waits ``--interval`` only once it finds nothing.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from types import FrameType

from .. import config
from ..exceptions import StoreUnavailable
from ..mapping import SignalMapping
from .commands import deliver, deliver_once, warn_if_process_local
from .errors import EXIT_OK, CommandError
from .loading import load_mapping
from .output import EscapingFormatter, say


class _Stop:
    """Set by SIGTERM or SIGINT; the loop checks it between deliveries and while it waits."""

    def __init__(self) -> None:
        self.signal: str | None = None

    def __call__(self, number: int, frame: FrameType | None) -> None:
        self.signal = signal.Signals(number).name

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds`` in short steps, returning early once stopped."""
        deadline = time.monotonic() + seconds
        while self.signal is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))


@contextmanager
def _stop_on_signals() -> Iterator[_Stop]:
    stop = _Stop()
    previous = {number: signal.signal(number, stop) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class _Run:
    """What the loop has done so far, for its summary, and the pause of an outage."""

    def __init__(self) -> None:
        self.totals: Counter[str] = Counter()
        self.delivered = self.rounds = self.outages = 0
        self.started = time.monotonic()
        self.backoff = 0.0
        #: The loops of ``--threads`` share this record.
        self.lock = threading.Lock()
        #: What stopped a loop other than a signal (it stops the others too).
        self.error: BaseException | None = None

    def outage(self, error: StoreUnavailable, interval: float, max_backoff: float) -> float:
        """Report a failed delivery; the pause before the next try."""
        with self.lock:
            if not self.backoff:  # one outage, however many retries it takes
                self.outages += 1
            self.backoff = min(max_backoff, max(self.backoff * 2, interval))
            _say(f"store unavailable: {error}; retrying in {self.backoff:g}s", err=True)
            return self.backoff

    def round(self, count: int, tally: Counter[str]) -> None:
        """Report a delivery that reached the store."""
        with self.lock:
            if self.backoff:
                _say("store reachable again", err=True)
                self.backoff = 0.0
            self.rounds += 1
            if count:
                self.delivered += count
                self.totals.update(tally)
                _say(f"delivered {count} payload(s) ({_counts(tally)}); {self.delivered} in total")

    def add(self, delivered: int, totals: Mapping[str, int], rounds: int, outages: int) -> None:
        """Count in what a process of ``--processes`` did."""
        self.delivered += delivered
        self.totals.update(totals)
        self.rounds += rounds
        self.outages += outages

    def summary(self, stopped_by: str | None) -> str:
        return (
            f"worker stopped by {stopped_by}: delivered {self.delivered} payload(s) "
            f"({_counts(self.totals) or 'none'}) in {self.rounds} delivery round(s) over "
            f"{time.monotonic() - self.started:.1f}s; {self.outages} store outage(s)"
        )


def worker(args: argparse.Namespace) -> int:
    if args.once:
        return deliver(args)
    if args.json:
        raise CommandError("worker --json needs --once (the worker's own lines are text)")
    if args.processes > 1:
        return _supervise(args)
    run = _work(args)
    return EXIT_OK if run.error is None else _raise(run.error)


def _work(args: argparse.Namespace) -> _Run:
    """Deliver in ``--threads`` loops until a signal stops them; print and return the record."""
    mapping = load_mapping(args.target, args.autodiscover, verbose=args.verbose > 0)
    warn_if_process_local(args)
    _say(
        f"worker: delivering {len(mapping)} signal(s) ({', '.join(mapping)}) from "
        f"{config.get_settings().store!r} every {args.interval:g}s{_shape(args)}; "
        "SIGTERM or Ctrl-C stops"
    )
    run = _Run()
    with _stop_on_signals() as stop:
        if args.threads == 1:
            _loop(args, mapping, stop, run)
        else:
            _in_threads(args, mapping, stop, run)
    if run.error is None:
        _say(run.summary(stop.signal))
    return run


def _shape(args: argparse.Namespace) -> str:
    limit = "" if args.limit is None else f", {args.limit} payload(s) of each signal a delivery"
    threads = "" if args.threads == 1 else f", {args.threads} threads"
    return limit + threads


def _in_threads(args: argparse.Namespace, mapping: SignalMapping, stop: _Stop, run: _Run) -> None:
    """Run ``--threads`` loops; this thread only waits, so that signals reach it."""
    loops = [
        threading.Thread(target=_loop, args=(args, mapping, stop, run), name=f"worker-{n}")
        for n in range(args.threads)
    ]
    for loop in loops:
        loop.start()
    for loop in loops:
        while loop.is_alive():
            loop.join(0.05)


def _loop(args: argparse.Namespace, mapping: SignalMapping, stop: _Stop, run: _Run) -> None:
    try:
        while stop.signal is None and run.error is None:
            try:
                count, tally = deliver_once(args, mapping)
            except StoreUnavailable as error:
                stop.wait(run.outage(error, args.interval, args.max_backoff))
                continue
            run.round(count, tally)
            if not (count and args.limit):  # bounded, and found some: there may be more
                stop.wait(args.interval)
    except BaseException as error:  # the command fails with it, the other loops stop
        run.error = error


def _raise(error: BaseException) -> int:
    raise error


def _supervise(args: argparse.Namespace) -> int:
    """Run ``--processes`` worker processes until a signal; forward SIGTERM to them, wait for
    each to finish its delivery, and sum up what they did."""
    context = multiprocessing.get_context("spawn")
    reports: multiprocessing.Queue[tuple[int, dict[str, int], int, int]] = context.Queue()
    _say(f"worker: starting {args.processes} processes; SIGTERM or Ctrl-C stops")
    run = _Run()
    with _stop_on_signals() as stop:
        processes = [
            context.Process(target=_process, args=(args, reports), name=f"worker-{n}")
            for n in range(args.processes)
        ]
        for process in processes:
            process.start()
        while stop.signal is None and all(process.is_alive() for process in processes):
            stop.wait(0.1)
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: it finishes its delivery, then exits
        for process in processes:
            process.join()
        while not reports.empty():
            run.add(*reports.get())
    # A process stopped by the signal before it could catch it (still starting) did no harm.
    stopped = (0, -signal.SIGTERM, -signal.SIGINT) if stop.signal else (0,)
    failed = [process.name for process in processes if process.exitcode not in stopped]
    _say(f"{run.summary(stop.signal)}; {args.processes} processes")
    if failed:
        raise CommandError(f"worker process(es) {', '.join(failed)} failed")
    return EXIT_OK


def _process(
    args: argparse.Namespace, reports: multiprocessing.Queue[tuple[int, dict[str, int], int, int]]
) -> None:
    """One process of ``--processes``: configured from the options and the environment as
    the command was, it runs ``--threads`` loops and reports what they did."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EscapingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("gaesignals").addHandler(handler)
    if args.store is not None or args.namespace is not None or args.codec is not None:
        config.configure(store=args.store, namespace=args.namespace, codec=args.codec)
    run = _work(args)
    reports.put((run.delivered, dict(run.totals), run.rounds, run.outages))
    if run.error is not None:
        raise run.error


def _counts(tally: Mapping[str, int]) -> str:
    return ", ".join(f"{name}={count}" for name, count in tally.items() if count)


def _say(line: str, *, err: bool = False) -> None:
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")  # as the log lines on stderr
    say(f"{stamp} {line}", err=err, flush=True)

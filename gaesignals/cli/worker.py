"""The worker loop: deliver a mapping every ``--interval`` seconds until SIGTERM or SIGINT.

A signal lets the current delivery finish; the loop then prints a summary and exits 0. A store
outage is reported once, and retried with a pause that doubles up to ``--max-backoff``.
"""

from __future__ import annotations

import argparse
import signal
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
from .output import say


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

    def outage(self, error: StoreUnavailable, interval: float, max_backoff: float) -> float:
        """Report a failed delivery; the pause before the next try."""
        if not self.backoff:  # one outage, however many retries it takes
            self.outages += 1
        self.backoff = min(max_backoff, max(self.backoff * 2, interval))
        _say(f"store unavailable: {error}; retrying in {self.backoff:g}s", err=True)
        return self.backoff

    def round(self, count: int, tally: Counter[str]) -> None:
        """Report a delivery that reached the store."""
        if self.backoff:
            _say("store reachable again", err=True)
            self.backoff = 0.0
        self.rounds += 1
        if count:
            self.delivered += count
            self.totals.update(tally)
            _say(f"delivered {count} payload(s) ({_counts(tally)}); {self.delivered} in total")

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
    mapping = load_mapping(args.target, args.autodiscover, verbose=args.verbose > 0)
    warn_if_process_local(args)
    _say(
        f"worker: delivering {len(mapping)} signal(s) ({', '.join(mapping)}) from "
        f"{config.get_settings().store!r} every {args.interval:g}s; SIGTERM or Ctrl-C stops"
    )
    with _stop_on_signals() as stop:
        run = _loop(args, mapping, stop)
    _say(run.summary(stop.signal))
    return EXIT_OK


def _loop(args: argparse.Namespace, mapping: SignalMapping, stop: _Stop) -> _Run:
    run = _Run()
    while stop.signal is None:
        try:
            count, tally = deliver_once(args, mapping)
        except StoreUnavailable as error:
            stop.wait(run.outage(error, args.interval, args.max_backoff))
            continue
        run.round(count, tally)
        stop.wait(args.interval)
    return run


def _counts(tally: Mapping[str, int]) -> str:
    return ", ".join(f"{name}={count}" for name, count in tally.items() if count)


def _say(line: str, *, err: bool = False) -> None:
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")  # as the log lines on stderr
    say(f"{stamp} {line}", err=err, flush=True)

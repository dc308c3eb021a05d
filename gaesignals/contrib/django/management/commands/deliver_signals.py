"""``manage.py deliver_signals``: deliver the registered receivers once, or keep delivering.

The role django-async's ``flush_queue`` plays, for a cron job, a worker process or a shell.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections

from gaesignals.contrib.django.apps import options
from gaesignals.delivery import check_limit, deliver
from gaesignals.exceptions import StoreUnavailable
from gaesignals.registration import check_lease, check_max_attempts

logger = logging.getLogger("gaesignals")


class Command(BaseCommand):
    help = (
        "Deliver every signal with a registered receiver (signals.py of the installed apps), "
        "each in its declared mode unless --reliable or --weak says otherwise; print the count."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument(
            "--reliable",
            dest="reliable",
            action="store_const",
            const=True,
            help="at-least-once delivery for every signal",
        )
        mode.add_argument(
            "--weak",
            dest="reliable",
            action="store_const",
            const=False,
            help="at-most-once delivery for every signal",
        )
        parser.add_argument("--lease", type=int, help="reliable lease in seconds")
        parser.add_argument("--max-attempts", type=int, help="failures before a dead letter")
        parser.add_argument(
            "--limit", type=int, help="payloads of each signal one delivery takes (default: all)"
        )
        parser.add_argument("--loop", action="store_true", help="keep delivering until interrupted")
        parser.add_argument(
            "--interval",
            type=float,
            default=5.0,
            help="seconds between deliveries with --loop (default 5)",
        )
        parser.add_argument(
            "--rounds", type=int, help="with --loop, stop after this many deliveries"
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        found = options()
        reliable = opts["reliable"] if opts["reliable"] is not None else found.get("RELIABLE")
        lease = opts["lease"] if opts["lease"] is not None else found.get("LEASE")
        attempts = opts["max_attempts"]
        attempts = attempts if attempts is not None else found.get("MAX_ATTEMPTS")
        if opts["interval"] < 0 or (opts["rounds"] is not None and opts["rounds"] < 1):
            raise CommandError("--interval must be >= 0 and --rounds >= 1")
        try:
            lease = None if lease is None else check_lease(lease)
            attempts = None if attempts is None else check_max_attempts(attempts)
            limit = None if opts["limit"] is None else check_limit(opts["limit"])
        except ValueError as error:
            raise CommandError(str(error)) from error

        def once() -> int:
            return deliver(None, reliable, lease=lease, max_attempts=attempts, limit=limit)

        def say(line: str) -> None:
            if opts["verbosity"] >= 1:
                self.stdout.write(line)

        if not opts["loop"]:
            try:
                delivered = once()
            except StoreUnavailable as error:
                raise CommandError(f"no delivery: {error}") from error
            say(f"delivered {delivered}")
            return
        total = rounds = 0
        try:
            while opts["rounds"] is None or rounds < opts["rounds"]:
                if rounds:
                    time.sleep(opts["interval"])
                rounds += 1
                # As Django does around each request: a long-lived worker must not keep a
                # database connection past CONN_MAX_AGE or after the server dropped it.
                close_old_connections()
                try:
                    delivered = once()
                except StoreUnavailable as error:
                    # A worker outlives an outage: log it and try again next round.
                    logger.error("no delivery this round: %s", error)
                    continue
                total += delivered
                if delivered:
                    say(f"delivered {delivered}")
        except KeyboardInterrupt:
            pass
        say(f"delivered {total} in {rounds} round(s)")

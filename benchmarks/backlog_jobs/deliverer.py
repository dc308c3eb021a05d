"""A gaesignals deliverer process: ``deliver`` in a loop, as ``gaesignals worker`` does with a
short ``--interval``, until it is terminated.

    python -m backlog_jobs.deliverer STORE_URL SIGNAL [--reliable] [--limit N]
"""

from __future__ import annotations

import argparse
import inspect
import logging
import time

import gaesignals

from . import job


def limit_supported() -> bool:
    """Whether this gaesignals' ``deliver`` takes ``limit`` (bounded takes, issue 28)."""
    return "limit" in inspect.signature(gaesignals.deliver).parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("signal")
    parser.add_argument("--reliable", action="store_true")
    parser.add_argument("--limit", type=int, default=0, help="0: deliver's default")
    args = parser.parse_args()
    logging.getLogger("gaesignals").setLevel(logging.ERROR)  # no secret key, on purpose
    gaesignals.configure(store=args.store)
    mapping = gaesignals.SignalMapping({args.signal: job})
    options = {"limit": args.limit} if args.limit and limit_supported() else {}
    while True:
        if not gaesignals.deliver(mapping, args.reliable, **options):
            time.sleep(0.001)


if __name__ == "__main__":
    main()

"""The ``gaesignals`` command (also ``python -m gaesignals``): deliver, run a worker, look at
pending payloads and dead letters, send, cancel or purge payloads, from a shell or a scheduler.

The mapping to deliver is named by import path, as gunicorn and celery name an app:
``pkg.mod:attr`` (a :class:`~gaesignals.SignalMapping`, a dict, a list of pairs, or a callable
returning one) or ``pkg.mod`` alone (the receivers it registers). The current directory is
importable, as with ``python -m``.

Exit codes: 0 done; 1 a gaesignals error (queue full, payload too large, ...); 2 a usage error
(bad arguments, an import path that names no mapping, bad JSON, bad settings, a payload id
or coalesce key that is not one); 3 the store is unavailable. Errors are one line on stderr;
``-v`` adds the traceback of a failed import.

The modules: :mod:`~gaesignals.cli.parser` (the grammar), :mod:`~gaesignals.cli.loading` (the
mapping an import path names), :mod:`~gaesignals.cli.commands` (the commands that run once),
:mod:`~gaesignals.cli.worker` (the worker loop), :mod:`~gaesignals.cli.output` (every line
printed from data, its control characters escaped) and :mod:`~gaesignals.cli.errors` (exit
codes).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from .. import config
from ..exceptions import (
    ConfigurationError,
    GaeSignalsError,
    InvalidCoalesceKey,
    InvalidPayloadId,
    InvalidSignalName,
    StoreUnavailable,
)
from .commands import counted
from .errors import EXIT_ERROR, EXIT_OK, EXIT_STORE, EXIT_USAGE, CommandError
from .loading import load_mapping
from .output import EscapingFormatter, say
from .parser import EPILOG, build_parser

logger = logging.getLogger("gaesignals")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return its exit code.

    The settings are left as they are unless ``--store``, ``--namespace`` or ``--codec`` is
    given; then they are configured from those and the environment (``GAESIGNALS_*``).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # --help, or a usage error argparse has already printed
        return exit.code if isinstance(exit.code, int) else EXIT_USAGE
    verbose: int = args.verbose or 0
    # Whether the store this command uses is made for it (rather than configured by a program
    # that calls main() in-process), so that a process-local one earns a warning.
    args.store_made_here = config._settings is None or any(
        option is not None for option in (args.store, args.namespace, args.codec)
    )
    with _logging_to_stderr(verbose):
        try:
            with _settings_for(args):
                code: int = args.run(args)
            return code
        except CommandError as error:
            return _fail(str(error), error.code)
        except GaeSignalsError as error:
            return _fail(*_described(error))


def _described(error: GaeSignalsError) -> tuple[str, int]:
    """The line and the exit code for a library error. The line is built from ``str(error)``
    alone: an error's data are its attributes, and its ``str()`` the sentence for people."""
    if isinstance(error, StoreUnavailable):
        kind = "" if type(error) is StoreUnavailable else f" ({type(error).__name__})"
        return f"store unavailable{kind}: {error}", EXIT_STORE
    usage = ConfigurationError | InvalidSignalName | InvalidPayloadId | InvalidCoalesceKey
    if isinstance(error, usage):
        return str(error), EXIT_USAGE
    return f"{type(error).__name__}: {error}", EXIT_ERROR


@contextmanager
def _settings_for(args: argparse.Namespace) -> Iterator[None]:
    """Configure from the settings options, if any, for the length of the command; then close
    the store made for it and put the process's settings back as they were."""
    if args.store is None and args.namespace is None and args.codec is None:
        yield
        return
    previous = config._settings  # restored below, so main() can run inside another program
    settings = config.configure(store=args.store, namespace=args.namespace, codec=args.codec)
    try:
        yield
    finally:
        with config._lock:
            config._settings = previous
        close = getattr(settings.store, "close", None)
        if close is not None:
            close()


def _fail(message: str, code: int) -> int:
    say(f"gaesignals: error: {message}", err=True)
    return code


@contextmanager
def _logging_to_stderr(verbose: int) -> Iterator[None]:
    """Show the library's log (handler errors, warnings; -v info, -vv debug) on stderr for the
    length of the command, and leave the logger as it was."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EscapingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    level = logger.level
    logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


__all__ = [
    "EPILOG",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_STORE",
    "EXIT_USAGE",
    "CommandError",
    "build_parser",
    "counted",
    "load_mapping",
    "main",
]

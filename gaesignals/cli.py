"""The ``gaesignals`` command (also ``python -m gaesignals``): deliver, run a worker, look at
pending payloads and dead letters, send a payload, from a shell or a scheduler.

The mapping to deliver is named by import path, as gunicorn and celery name an app:
``pkg.mod:attr`` (a :class:`~gaesignals.SignalMapping`, a dict, a list of pairs, or a callable
returning one) or ``pkg.mod`` alone (the receivers it registers). The current directory is
importable, as with ``python -m``.

Exit codes: 0 done; 1 a gaesignals error (queue full, payload too large, ...); 2 a usage error
(bad arguments, an import path that names no mapping, bad JSON, bad settings); 3 the store is
unavailable. Errors are one line on stderr; ``-v`` adds the traceback of a failed import.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import FrameType
from typing import Any

from . import config, delivery
from .exceptions import ConfigurationError, GaeSignalsError, InvalidSignalName, StoreUnavailable
from .mapping import Handler, SignalMapping
from .registry import autodiscover, check_lease, check_max_attempts
from .sending import send

logger = logging.getLogger("gaesignals")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_STORE = 3

EPILOG = """\
The secret key that signs and verifies payloads is read only from GAESIGNALS_SECRET_KEY, never
from the command line, where ps would show it to every user of the machine.

exit codes: 0 done, 1 a gaesignals error (queue full, payload too large, ...), 2 a usage error
(bad arguments, an import path that names no mapping, bad JSON, bad settings), 3 the store is
unavailable (down, timed out, or contended).
"""


class CommandError(Exception):
    """A failure to report as one line on stderr, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


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
    with _logging_to_stderr(verbose):
        try:
            with _settings_for(args):
                code: int = args.run(args)
            return code
        except CommandError as error:
            return _fail(str(error), error.code)
        except StoreUnavailable as error:
            kind = "" if type(error) is StoreUnavailable else f" ({type(error).__name__})"
            return _fail(f"store unavailable{kind}: {error}", EXIT_STORE)
        except (ConfigurationError, InvalidSignalName) as error:
            return _fail(str(error), EXIT_USAGE)
        except GaeSignalsError as error:
            return _fail(f"{type(error).__name__}: {error}", EXIT_ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gaesignals",
        description="Deliver, inspect and send gaesignals deferred signals.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(parser, argparse.SUPPRESS)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(
        name: str, run: Callable[[argparse.Namespace], int], text: str, more: str = ""
    ) -> Any:
        sub = commands.add_parser(
            name,
            help=text,
            description=f"{text} {more}".strip(),
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        # Global options are accepted after the command too; SUPPRESS keeps a value given before.
        _global_options(sub, argparse.SUPPRESS)
        sub.set_defaults(run=run)
        return sub

    sub = command("deliver", _deliver, "Deliver the pending payloads of a mapping once.")
    _mapping_options(sub)
    _delivery_options(sub)
    sub.add_argument("--json", action="store_true", help="print the counts as JSON")

    sub = command(
        "worker",
        _worker,
        "Deliver a mapping every --interval seconds until stopped.",
        "SIGTERM or SIGINT (Ctrl-C) lets the current delivery finish, prints a summary and "
        "exits 0. A store outage is reported and retried with a growing pause (up to "
        "--max-backoff).",
    )
    _mapping_options(sub)
    _delivery_options(sub)
    sub.add_argument(
        "--interval", type=_positive_float, default=1.0, help="seconds between deliveries (1)"
    )
    sub.add_argument(
        "--max-backoff",
        type=_positive_float,
        default=30.0,
        help="longest pause between retries while the store is down (30)",
    )
    sub.add_argument("--once", action="store_true", help="deliver once and exit, as `deliver`")
    sub.add_argument("--json", action="store_true", help="with --once: print the counts as JSON")

    sub = command("pending", _pending, "Show each signal's pending payloads, bytes, oldest age.")
    sub.add_argument("names", nargs="+", metavar="NAME", help="signal names")
    sub.add_argument("--json", action="store_true", help="print JSON")

    sub = command("send", _send, "Send one payload (JSON) to a signal.")
    sub.add_argument("name", metavar="NAME", help="the signal's name")
    data = sub.add_mutually_exclusive_group()
    data.add_argument("--data", metavar="JSON", help="the payload as JSON (default: null)")
    data.add_argument(
        "--data-file", metavar="PATH", help="read the JSON payload from a file, or - for stdin"
    )

    sub = command(
        "dead-letters",
        _dead_letters,
        "List a signal's dead letters (one repr a line), or requeue or purge them.",
    )
    sub.add_argument("name", metavar="NAME", help="the signal's name")
    action = sub.add_mutually_exclusive_group()
    action.add_argument("--requeue", action="store_true", help="move them back to the queue")
    action.add_argument("--purge", action="store_true", help="delete them")
    sub.add_argument("--json", action="store_true", help="print JSON")
    # The top level's defaults, for options given nowhere.
    parser.set_defaults(store=None, namespace=None, codec=None, verbose=0)
    return parser


def _global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    group = parser.add_argument_group("settings (default: the GAESIGNALS_* environment)")
    group.add_argument(
        "--store",
        metavar="URL",
        default=default,
        help="memory://, appengine:// or memcached://host:port[,host:port...] "
        "(like GAESIGNALS_STORE)",
    )
    group.add_argument(
        "--namespace", default=default, help="key namespace (like GAESIGNALS_NAMESPACE)"
    )
    group.add_argument(
        "--codec", choices=config.CODECS, default=default, help="like GAESIGNALS_CODEC"
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default,
        help="more output: per-signal counts, info logs; -vv for debug logs",
    )


def _mapping_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target",
        nargs="?",
        metavar="pkg.mod[:attr]",
        help="a mapping (SignalMapping, dict, list of pairs, or a callable returning one), or "
        "a module whose registered receivers to deliver",
    )
    parser.add_argument(
        "--autodiscover",
        metavar="PKG,PKG",
        type=lambda text: [part.strip() for part in text.split(",") if part.strip()],
        default=[],
        help="import <pkg>.signals of each package first (their receivers are delivered when "
        "no attr is named)",
    )


def _delivery_options(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--reliable",
        dest="reliable",
        action="store_const",
        const=True,
        default=None,
        help="deliver every signal reliably (default: each signal's declared mode)",
    )
    mode.add_argument(
        "--weak", dest="reliable", action="store_const", const=False, help="deliver weakly"
    )
    parser.add_argument("--lease", type=_checked(int, check_lease), help="reliable lease, seconds")
    parser.add_argument(
        "--max-attempts",
        type=_checked(int, check_max_attempts),
        help="reliable attempts before a payload becomes a dead letter",
    )


def _checked(kind: Callable[[str], Any], check: Callable[[Any], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return check(kind(text))
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


# -- loading the user's mapping -------------------------------------------------------------------


def load_mapping(
    target: str | None, packages: Sequence[str] = (), *, verbose: bool = False
) -> SignalMapping:
    """The mapping ``target`` names (see the module docstring), after autodiscovering
    ``packages``; :class:`CommandError` (exit 2) when it names none."""
    if not target and not packages:
        raise CommandError("name a mapping (pkg.mod:attr or pkg.mod) or --autodiscover PKG")
    # What `python -m` does, so `gaesignals deliver myapp.signals` works from the project root.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    if packages:
        try:
            autodiscover(packages)
        except Exception as error:
            what = f"importing --autodiscover {','.join(packages)}"
            raise _user_code_error(what, error, verbose) from None
    if not target:
        return _registered(f"--autodiscover {','.join(packages)}")
    module_name, _, attr = target.partition(":")
    if not module_name or module_name.startswith("."):
        raise CommandError(f"{target!r} is not an import path (pkg.mod or pkg.mod:attr)")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and (module_name + ".").startswith(error.name + "."):
            raise CommandError(f"cannot import {module_name!r}: {error}") from None
        raise _user_code_error(f"importing {module_name}", error, verbose) from None
    except Exception as error:
        raise _user_code_error(f"importing {module_name}", error, verbose) from None
    if not attr:
        return _registered(module_name)
    found: Any = module
    for part in attr.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise CommandError(f"module {module_name!r} has no attribute {attr!r}") from None
    if callable(found) and not isinstance(found, SignalMapping | Mapping | list | tuple):
        try:
            found = found()
        except Exception as error:
            raise _user_code_error(f"calling {target}()", error, verbose) from None
    if found is None:
        raise CommandError(f"{target} is None, not a signal mapping")
    try:
        mapping = SignalMapping.coerce(found)
    except (TypeError, ValueError) as error:
        raise CommandError(f"{target} is not a signal mapping: {error}") from None
    if not mapping:
        raise CommandError(f"{target} maps no signals")
    return mapping


def _registered(source: str) -> SignalMapping:
    mapping = SignalMapping.coerce(None)
    if not mapping:
        raise CommandError(f"{source} registered no receivers; name a mapping with pkg.mod:attr")
    return mapping


def _user_code_error(what: str, error: BaseException, verbose: bool) -> CommandError:
    """The one line for an error raised by the user's module (its traceback with -v)."""
    if verbose:
        traceback.print_exception(error, file=sys.stderr)
    return CommandError(f"error {what}: {type(error).__name__}: {error}")


# -- deliver and worker ---------------------------------------------------------------------------


class _Counted:
    """A handler wrapped to count, per signal, the payloads every handler took without raising:
    :func:`~gaesignals.deliver` returns only the total. The handlers of one payload run in
    order in one thread, so the first resets the payload's state and the last records it."""

    def __init__(
        self,
        handler: Handler,
        name: str,
        tally: Counter[str],
        failed: list[bool],
        first: bool,
        last: bool,
    ) -> None:
        self.handler, self.name, self.tally, self.failed = handler, name, tally, failed
        self.first, self.last = first, last
        if getattr(handler, "__gaesignals_pass_name__", False):
            self.__gaesignals_pass_name__ = True

    def __repr__(self) -> str:
        return repr(self.handler)  # what the library's log names

    def __call__(self, data: Any, **kwargs: Any) -> object:
        if self.first:
            self.failed[0] = False
        try:
            return self.handler(data, **kwargs)
        except BaseException:
            self.failed[0] = True
            raise
        finally:
            if self.last and not self.failed[0]:
                self.tally[self.name] += 1


def counted(mapping: SignalMapping) -> tuple[SignalMapping, Counter[str]]:
    """``mapping`` with its handlers wrapped to count deliveries per signal, and the counter."""
    tally: Counter[str] = Counter()
    wrapped = []
    for name, handlers in mapping.items():
        failed = [False]  # shared by the handlers of one signal
        last = len(handlers) - 1
        wrapped.append(
            (
                name,
                [
                    _Counted(handler, name, tally, failed, index == 0, index == last)
                    for index, handler in enumerate(handlers)
                ],
            )
        )
    return SignalMapping(wrapped, lease=mapping.lease, max_attempts=mapping.max_attempts), tally


def _deliver_once(args: argparse.Namespace, mapping: SignalMapping) -> tuple[int, Counter[str]]:
    wrapped, tally = counted(mapping)
    total = delivery.deliver(
        wrapped, args.reliable, lease=args.lease, max_attempts=args.max_attempts
    )
    return total, tally


def _deliver(args: argparse.Namespace) -> int:
    mapping = load_mapping(args.target, args.autodiscover, verbose=args.verbose > 0)
    total, tally = _deliver_once(args, mapping)
    if args.json:
        print(json.dumps({"delivered": total, "signals": dict(tally)}))
    else:
        print(f"delivered {total} payload(s)")
        if args.verbose:
            for name in mapping:
                print(f"  {name}: {tally[name]}")
    return EXIT_OK


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


def _worker(args: argparse.Namespace) -> int:
    if args.once:
        return _deliver(args)
    if args.json:
        raise CommandError("worker --json needs --once (the worker's own lines are text)")
    mapping = load_mapping(args.target, args.autodiscover, verbose=args.verbose > 0)
    settings = config.get_settings()
    names = ", ".join(mapping)
    _say(
        f"worker: delivering {len(mapping)} signal(s) ({names}) from {settings.store!r} "
        f"every {args.interval:g}s; SIGTERM or Ctrl-C stops"
    )
    totals: Counter[str] = Counter()
    delivered = rounds = outages = 0
    started = time.monotonic()
    backoff = 0.0
    with _stop_on_signals() as stop:
        while stop.signal is None:
            try:
                count, tally = _deliver_once(args, mapping)
            except StoreUnavailable as error:
                if not backoff:  # one outage, however many retries it takes
                    outages += 1
                backoff = min(args.max_backoff, max(backoff * 2, args.interval))
                _say(f"store unavailable: {error}; retrying in {backoff:g}s", err=True)
                stop.wait(backoff)
                continue
            if backoff:
                _say("store reachable again", err=True)
                backoff = 0.0
            rounds += 1
            if count:
                delivered += count
                totals.update(tally)
                _say(f"delivered {count} payload(s) ({_counts(tally)}); {delivered} in total")
            stop.wait(args.interval)
    _say(
        f"worker stopped by {stop.signal}: delivered {delivered} payload(s) "
        f"({_counts(totals) or 'none'}) in {rounds} delivery round(s) over "
        f"{time.monotonic() - started:.1f}s; {outages} store outage(s)"
    )
    return EXIT_OK


def _counts(tally: Mapping[str, int]) -> str:
    return ", ".join(f"{name}={count}" for name, count in tally.items() if count)


def _say(line: str, *, err: bool = False) -> None:
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")  # as the log lines on stderr
    print(f"{stamp} {line}", file=sys.stderr if err else sys.stdout, flush=True)


# -- pending, send, dead letters ------------------------------------------------------------------


def _pending(args: argparse.Namespace) -> int:
    import gaesignals

    # gaesignals.pending(names) -> {name: Pending(count, bytes, oldest_age)} (gaesignals.stats).
    pending = getattr(gaesignals, "pending", None)
    if pending is None:
        raise CommandError("this version of gaesignals has no pending()", EXIT_ERROR)
    names = list(dict.fromkeys(args.names))
    found = pending(names)
    rows = {name: found[name] for name in names}
    if args.json:
        print(
            json.dumps(
                {
                    name: {"count": p.count, "bytes": p.bytes, "oldest_age": p.oldest_age}
                    for name, p in rows.items()
                }
            )
        )
        return EXIT_OK
    width = max(len("signal"), *(len(name) for name in names))
    print(f"{'signal':<{width}}  {'pending':>8}  {'bytes':>10}  oldest")
    for name, p in rows.items():
        age = "-" if p.oldest_age is None else f"{p.oldest_age:.1f}s"
        print(f"{name:<{width}}  {p.count:>8}  {p.bytes:>10}  {age}")
    return EXIT_OK


def _send(args: argparse.Namespace) -> int:
    text, source = args.data, "--data"
    if args.data_file is not None:
        source = "stdin" if args.data_file == "-" else args.data_file
        try:
            if args.data_file == "-":
                text = sys.stdin.read()
            else:
                with open(args.data_file, encoding="utf-8") as file:
                    text = file.read()
        except (OSError, UnicodeDecodeError) as error:
            raise CommandError(f"cannot read --data-file: {error}") from None
    data = None
    if text is not None:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CommandError(f"invalid JSON in {source}: {error}") from None
    send(args.name, data)
    if args.verbose:
        print("sent")
    return EXIT_OK


def _dead_letters(args: argparse.Namespace) -> int:
    if args.requeue or args.purge:
        verb = "requeued" if args.requeue else "purged"
        take = delivery.requeue_dead_letters if args.requeue else delivery.purge_dead_letters
        count = take(args.name)
        print(json.dumps({verb: count}) if args.json else f"{verb} {count} dead letter(s)")
        return EXIT_OK
    letters = delivery.dead_letters(args.name)
    if args.json:
        try:
            print(json.dumps(letters))
        except (TypeError, ValueError) as error:
            raise CommandError(
                f"the dead letters of {args.name!r} are not JSON-serialisable ({error}); "
                "list them without --json",
                EXIT_ERROR,
            ) from None
    else:
        for letter in letters:
            print(repr(letter))
    return EXIT_OK


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


# -- output ---------------------------------------------------------------------------------------


def _fail(message: str, code: int) -> int:
    print(f"gaesignals: error: {message}", file=sys.stderr)
    return code


@contextmanager
def _logging_to_stderr(verbose: int) -> Iterator[None]:
    """Show the library's log (handler errors, warnings; -v info, -vv debug) on stderr for the
    length of the command, and leave the logger as it was."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    level = logger.level
    logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)

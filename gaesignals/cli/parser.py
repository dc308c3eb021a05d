"""The command line's grammar: the settings options, the commands and their options.

Each command's parser names its function as ``run``; the settings options (``--store``,
``--namespace``, ``--codec``, ``-v``) are accepted before the command and after it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .. import config
from ..delivery import check_limit
from ..registration import check_lease, check_max_attempts
from . import dashboard
from .commands import (
    cancel_one,
    dead_letters,
    deliver,
    purge_pending,
    send_one,
    show_pending,
)
from .worker import worker

EPILOG = """\
The secret key that signs and verifies payloads is read only from GAESIGNALS_SECRET_KEY, never
from the command line, where ps would show it to every user of the machine.

exit codes: 0 done, 1 a gaesignals error (queue full, payload too large, ...), 2 a usage error
(bad arguments, an import path that names no mapping, bad JSON, bad settings, a payload id
or coalesce key that is not one), 3 the store is unavailable (down, timed out, or contended).
"""

_Run = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gaesignals",
        description="Deliver, inspect and send gaesignals deferred signals.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(parser)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_deliver(commands)
    _add_worker(commands)
    _add_pending(commands)
    _add_send(commands)
    _add_cancel(commands)
    _add_purge(commands)
    _add_dead_letters(commands)
    _add_dashboard(commands)
    # The top level's defaults, for options given nowhere.
    parser.set_defaults(store=None, namespace=None, codec=None, verbose=0, quiet=False)
    return parser


def _command(
    commands: Any, name: str, run: _Run, text: str, more: str = ""
) -> argparse.ArgumentParser:
    sub: argparse.ArgumentParser = commands.add_parser(
        name,
        help=text,
        description=f"{text} {more}".strip(),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Global options are accepted after the command too; SUPPRESS keeps a value given before.
    _global_options(sub)
    sub.set_defaults(run=run)
    return sub


def _add_deliver(commands: Any) -> None:
    sub = _command(commands, "deliver", deliver, "Deliver the pending payloads of a mapping once.")
    _mapping_options(sub)
    _delivery_options(sub)
    sub.add_argument("--json", action="store_true", help="print the counts as JSON")


def _add_worker(commands: Any) -> None:
    sub = _command(
        commands,
        "worker",
        worker,
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
    sub.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="delivery loops in each process, sharing the backlog (1)",
    )
    sub.add_argument(
        "--processes",
        type=_positive_int,
        default=1,
        help="worker processes, each with --threads loops (1)",
    )
    sub.add_argument("--once", action="store_true", help="deliver once and exit, as `deliver`")
    sub.add_argument("--json", action="store_true", help="with --once: print the counts as JSON")


def _add_pending(commands: Any) -> None:
    sub = _command(
        commands,
        "pending",
        show_pending,
        "Show each signal's pending payloads, bytes, oldest age.",
        "With no NAME, list the signals that have payloads pending, of those --app or "
        "--autodiscover registers or declares.",
    )
    sub.add_argument("names", nargs="*", metavar="NAME", help="signal names")
    sub.add_argument(
        "--app",
        metavar="pkg.mod[:attr]",
        help="with no NAME: a module whose registered and declared signals to list, or a "
        "mapping at pkg.mod:attr",
    )
    sub.add_argument(
        "--autodiscover",
        metavar="PKG,PKG",
        type=_packages,
        default=[],
        help="with no NAME: import <pkg>.signals of each package first",
    )
    sub.add_argument("--json", action="store_true", help="print JSON")


def _add_send(commands: Any) -> None:
    sub = _command(commands, "send", send_one, "Send one payload (JSON) to a signal.")
    sub.add_argument("name", metavar="NAME", help="the signal's name")
    data = sub.add_mutually_exclusive_group()
    data.add_argument("--data", metavar="JSON", help="the payload as JSON (default: null)")
    data.add_argument(
        "--data-file", metavar="PATH", help="read the JSON payload from a file, or - for stdin"
    )
    sub.add_argument(
        "--coalesce",
        metavar="KEY",
        help="coalesce with the signal's other pending payloads of this key (the newest runs)",
    )
    sub.add_argument(
        "--json", action="store_true", help="print the payload's id (for cancel) as JSON"
    )


def _add_cancel(commands: Any) -> None:
    sub = _command(
        commands,
        "cancel",
        cancel_one,
        "Cancel one pending payload by the id its send returned.",
        "A payload already delivered cannot be taken back: the command cannot tell that case "
        "from a cancellation stored in time, and says which it knows.",
    )
    sub.add_argument("name", metavar="NAME", help="the signal's name")
    sub.add_argument("id", metavar="ID", help="the payload's id (a send's receipt.id)")
    sub.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_purge(commands: Any) -> None:
    sub = _command(
        commands,
        "purge",
        purge_pending,
        "Drop every pending payload of a signal, and print how many.",
        "Its dead letters stay (dead-letters NAME --purge drops those).",
    )
    sub.add_argument("name", metavar="NAME", help="the signal's name")
    sub.add_argument("--json", action="store_true", help="print the count as JSON")


def _add_dead_letters(commands: Any) -> None:
    sub = _command(
        commands,
        "dead-letters",
        dead_letters,
        "List a signal's dead letters (one repr a line), or requeue or purge them.",
    )
    sub.add_argument("name", metavar="NAME", help="the signal's name")
    action = sub.add_mutually_exclusive_group()
    action.add_argument("--requeue", action="store_true", help="move them back to the queue")
    action.add_argument("--purge", action="store_true", help="delete them")
    sub.add_argument("--json", action="store_true", help="print JSON")


def _add_dashboard(commands: Any) -> None:
    sub = _command(
        commands,
        "dashboard",
        dashboard.serve_dashboard,
        "Serve the dashboard alone (each connection in its own thread) until stopped.",
        "Its bearer token is read from GAESIGNALS_DASHBOARD_TOKEN (32+ bytes).",
    )
    dashboard.add_options(sub)


def _global_options(parser: argparse.ArgumentParser) -> None:
    """The settings options; SUPPRESS leaves a value unset where it is not given, so the one
    given before the command survives the command's parser."""
    group = parser.add_argument_group("settings (default: the GAESIGNALS_* environment)")
    group.add_argument(
        "--store",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="like GAESIGNALS_STORE: memory:// (this process only), appengine://, "
        "memcached://host:port[,host:port...], redis://[[user]:password@]host[:port][/db], "
        "rediss://... (TLS), valkey://... and valkeys://... (Valkey, TLS), "
        "unix:///path/to/redis.sock[?db=N], or redis://host:port[,host:port...]?cluster=true "
        "(a Redis cluster; valkey:// for a Valkey one); memcached, Redis and Valkey URLs take "
        "?timeout=S&max_value_size=N",
    )
    group.add_argument(
        "--namespace", default=argparse.SUPPRESS, help="key namespace (like GAESIGNALS_NAMESPACE)"
    )
    group.add_argument(
        "--codec", choices=config.CODECS, default=argparse.SUPPRESS, help="like GAESIGNALS_CODEC"
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="more output: per-signal counts, info logs; -vv for debug logs",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no line saying what was done when there is nothing else to print",
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
        type=_packages,
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
    parser.add_argument(
        "--limit",
        type=_checked(int, check_limit),
        help="payloads of each signal one delivery takes, oldest first (default: all)",
    )


def _packages(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _checked(kind: Callable[[str], Any], check: Callable[[Any], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return check(kind(text))
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value

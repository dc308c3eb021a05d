"""``gaesignals dashboard``: the dashboard served alone, by the standard library's wsgiref.

``--app pkg.mod`` imports a module whose receivers and declarations the dashboard shows;
``--app pkg.mod:attr`` names a mapping (shown, and delivered by "deliver now"). The token is
read from ``GAESIGNALS_DASHBOARD_TOKEN`` only, never from the command line, where ps would show
it. Each connection is served by a thread of its own, and one that sends nothing for
``--read-timeout`` seconds is closed, so an idle or slow client holds up no one; SIGTERM or
SIGINT stops it at once, whatever connections are open. A tool for an operator's machine or a
private network, not a production web server (mount the app in one for that).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from socketserver import ThreadingMixIn
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ..mapping import SignalMapping
from .errors import EXIT_OK, CommandError
from .loading import load_mapping

logger = logging.getLogger("gaesignals")


#: Seconds a connection may stay silent before it is closed (``--read-timeout``).
READ_TIMEOUT = 30.0
#: How soon a signal is noticed between connections.
POLL_SECONDS = 0.2


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per connection. Daemon threads, not joined at close: a connection left
    open must not keep the process from stopping."""

    daemon_threads = True
    block_on_close = False
    read_timeout = READ_TIMEOUT

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that timed out or broke is logged (shown with -v), not printed."""
        error = sys.exc_info()[1]
        logger.info("dashboard: connection from %s ended: %r", client_address[0], error)


class _QuietHandler(WSGIRequestHandler):
    """Logs each request on the library's logger (shown with -v), not on stderr, and reads
    with the server's timeout."""

    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.read_timeout)

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("dashboard: %s %s", self.address_string(), format % args)


class _Stop:
    """Set by SIGTERM or SIGINT; the serving loop checks it between requests."""

    def __init__(self) -> None:
        self.by: str | None = None

    def __call__(self, number: int, frame: FrameType | None) -> None:
        self.by = signal.Signals(number).name


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--app",
        required=True,
        metavar="pkg.mod[:attr]",
        help="a module whose receivers and declarations to show, or a mapping at pkg.mod:attr",
    )
    parser.add_argument("--port", type=int, required=True, help="the port to listen on (0: any)")
    parser.add_argument("--host", default="127.0.0.1", help="the address to bind (127.0.0.1)")
    parser.add_argument(
        "--read-timeout",
        type=float,
        default=READ_TIMEOUT,
        metavar="SECONDS",
        help=f"close a connection silent for this long ({READ_TIMEOUT:g})",
    )


def _signals(target: str, verbose: bool) -> SignalMapping | None:
    """The mapping ``target`` names, or None (the registry) after importing its module."""
    if ":" in target:
        return load_mapping(target, verbose=verbose)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        importlib.import_module(target)
    except Exception as error:
        raise CommandError(f"cannot import {target!r}: {type(error).__name__}: {error}") from None
    return None


def _check_token() -> None:
    """The token must be in the environment: say so in the command line's terms, not with
    the arguments of ``DashboardApp``."""
    from ..dashboard import MIN_TOKEN_BYTES, TOKEN_ENV

    token = os.environ.get(TOKEN_ENV, "").strip()
    make = f"export {TOKEN_ENV}=$(python -c 'import secrets; print(secrets.token_urlsafe(48))')"
    if not token:
        raise CommandError(f"set {TOKEN_ENV} to the dashboard's token first, e.g.: {make}")
    if len(token.encode("utf-8")) < MIN_TOKEN_BYTES:
        raise CommandError(f"{TOKEN_ENV} must be at least {MIN_TOKEN_BYTES} bytes, e.g.: {make}")


def serve_dashboard(args: argparse.Namespace) -> int:
    # Imported here: the dashboard needs prometheus_client (the `dashboard` extra), which
    # the other commands do not.
    try:
        from ..dashboard import DashboardApp
    except ImportError as error:
        raise CommandError(str(error)) from None

    if not args.read_timeout > 0:
        raise CommandError(f"--read-timeout must be more than 0, got {args.read_timeout:g}")
    _check_token()
    app = DashboardApp(_signals(args.app, args.verbose > 0))
    try:
        server = make_server(args.host, args.port, app, _Server, _QuietHandler)
    except OSError as error:
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {error}") from None
    server.read_timeout = args.read_timeout
    server.timeout = POLL_SECONDS
    stop = _Stop()
    previous = {n: signal.signal(n, stop) for n in (signal.SIGTERM, signal.SIGINT)}
    host, port = str(server.server_address[0]), server.server_address[1]
    print(f"serving the gaesignals dashboard on http://{host}:{port}/", flush=True)
    try:
        while stop.by is None:
            server.handle_request()  # returns once a connection has its thread
    finally:
        server.server_close()
        for number, handler in previous.items():
            signal.signal(number, handler)
    print(f"dashboard stopped by {stop.by}", flush=True)
    return EXIT_OK

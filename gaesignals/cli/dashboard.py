"""``gaesignals dashboard``: the dashboard served alone, by the standard library's wsgiref.

``--app pkg.mod`` imports a module whose receivers and declarations the dashboard shows;
``--app pkg.mod:attr`` names a mapping (shown, and delivered by "deliver now"). The token is
read from ``GAESIGNALS_DASHBOARD_TOKEN`` only, never from the command line, where ps would show
it. One request at a time, until SIGTERM or SIGINT: a tool for an operator's machine or a
private network, not a production web server (mount the app in one for that).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ..mapping import SignalMapping
from .errors import EXIT_OK, CommandError
from .loading import load_mapping

logger = logging.getLogger("gaesignals")


class _QuietHandler(WSGIRequestHandler):
    """Logs each request on the library's logger (shown with -v), not on stderr."""

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


def serve_dashboard(args: argparse.Namespace) -> int:
    # Imported here: the dashboard needs prometheus_client (the `dashboard` extra), which
    # the other commands do not.
    try:
        from ..dashboard import DashboardApp
    except ImportError as error:
        raise CommandError(str(error)) from None

    app = DashboardApp(_signals(args.app, args.verbose > 0))
    try:
        server = make_server(args.host, args.port, app, WSGIServer, _QuietHandler)
    except OSError as error:
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {error}") from None
    stop = _Stop()
    previous = {n: signal.signal(n, stop) for n in (signal.SIGTERM, signal.SIGINT)}
    host, port = str(server.server_address[0]), server.server_address[1]
    print(f"serving the gaesignals dashboard on http://{host}:{port}/", flush=True)
    server.timeout = 0.2  # how soon a signal is noticed between requests
    try:
        while stop.by is None:
            server.handle_request()
    finally:
        server.server_close()
        for number, handler in previous.items():
            signal.signal(number, handler)
    print(f"dashboard stopped by {stop.by}", flush=True)
    return EXIT_OK

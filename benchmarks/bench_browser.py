"""No target: browser signals, from ``send_to_browser`` to the JavaScript handler, and what an
idle waiting browser costs.

A page in headless chromium (Debian's, driven by playwright) connects a handler that records
``performance.timeOrigin + performance.now()`` (the system clock, as ``time.time()`` here) as
its first statement. Broadcast messages carrying nothing but their number are sent by the
server's own process (which wakes its waiting polls at once) at random gaps of 50-250 ms, and
by another process (as another instance would: the next read of the poll finds it) at random
gaps of 50 ms to 50 ms more than the poll interval, so that its sends land at every phase of
the poll's reads; the latency is the handler's time minus the time taken just before
``send_to_browser``. Long-polling
runs on a threaded WSGI server (wsgiref), SSE on uvicorn (the bridge's ASGI face); both on
memcached, counted by ``CountingStore``. The idle cost is the store's reads while idle pages
wait, per browser and per minute, beside the poll requests they make.

The machine is shared: the chromium, the servers and memcached share its cores with whatever
else runs (see BENCHMARKS.md); the figures are medians and tails of one run.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from common import Memcached, Row, arguments, emit, percentile, print_table, quiet_library

import gaesignals
from gaesignals import send_to_browser
from gaesignals.browser import Bridge
from gaesignals.browser.asgi import BridgeASGI
from gaesignals.config import store_from_url
from gaesignals.testing.doubles import CountingStore

NAME = "bench"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PAGE = """<!doctype html><meta charset=utf-8><link rel=icon href="data:,"><title>bench</title>
<script type=module>
import {{ configure, connect }} from "/signals/client.js";
configure({{ transport: "{transport}" }});
window.seen = {{}};
connect("bench", (data) => {{ window.seen[data.i] = performance.timeOrigin + performance.now(); }});
document.documentElement.dataset.ready = "1";
</script>"""


#: Requests that wait for messages (a long poll, or a stream), counted by the site.
WAITS = {"count": 0}


def site(bridge: Any, transport: str, *, asgi: bool) -> Any:
    """The page at ``/``, the bridge below ``/signals``: a WSGI app, or an ASGI one."""
    page = PAGE.format(transport=transport).encode()
    if not asgi:

        def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
            if environ["PATH_INFO"] == "/signals/poll":
                WAITS["count"] += 1
            if environ["PATH_INFO"].startswith("/signals/"):
                return bridge(environ, start_response)
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [page]

        return wsgi

    streaming = BridgeASGI(bridge)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/signals/events":
            WAITS["count"] += 1
        if scope["type"] != "http" or scope["path"].startswith("/signals/"):
            await streaming(scope, receive, send)
            return
        headers = [(b"content-type", b"text/html; charset=utf-8")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": page})

    return app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serving_wsgi(app: Any) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, _Server, _Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def serving_asgi(app: Any) -> Iterator[str]:
    import uvicorn

    from gaesignals.testing import free_port

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


Send = Callable[[int], float]


def send_here(i: int) -> float:
    """Send message ``i`` from this process (the server's: its polls are woken at once)."""
    sent = time.time()
    send_to_browser(NAME, {"i": i}, broadcast=True)
    return sent


def sender(url: str, conn: Connection) -> None:
    """Another process, as another instance would be: it sends when told, and says when."""
    quiet_library()
    gaesignals.configure(store=url)
    while (i := conn.recv()) is not None:
        sent = time.time()
        send_to_browser(NAME, {"i": i}, broadcast=True)
        conn.send(sent)


def latencies(page: Any, count: int, seed: int, send: Send, gap: float) -> list[float]:
    """Seconds from just before each ``send_to_browser`` to the handler's first statement,
    sent at random gaps of 50 ms to ``gap``; each message has a number of its own (the seed's
    thousands), in this page."""
    rng = random.Random(seed)
    found: list[float] = []
    for i in range(seed * 1000, seed * 1000 + count):
        time.sleep(rng.uniform(0.05, gap))
        sent = send(i)
        page.wait_for_function(f"() => window.seen[{i}] !== undefined", polling=5)
        found.append(page.evaluate(f"window.seen[{i}]") / 1000 - sent)
    return found


def idle_cost(
    browser: Any, base: str, store: CountingStore, pages: int, seconds: float
) -> tuple[float, float]:
    """Store reads, and waiting requests, per minute per idle waiting browser."""
    context = browser.new_context()
    opened = [context.new_page() for _ in range(pages)]
    for page in opened:
        page.goto(f"{base}/")
        page.wait_for_selector("html[data-ready]", state="attached")
    time.sleep(2)  # every page in its first poll
    before, waits = store.calls["gets_many"], WAITS["count"]
    time.sleep(seconds)
    reads = store.calls["gets_many"] - before
    requests = WAITS["count"] - waits
    context.close()
    minutes = seconds / 60
    return reads / pages / minutes, requests / pages / minutes


def measure(
    browser: Any, store: CountingStore, transport: str, elsewhere: Send, args: Any
) -> list[Row]:
    count = 60 if args.quick else 300
    idle_seconds = 15.0 if args.quick else 60.0
    bridge = Bridge(poll_seconds=20, poll_interval=1.0)
    asgi = transport == "sse"
    serve = serving_asgi if asgi else serving_wsgi
    with serve(site(bridge, transport, asgi=asgi)) as base:
        page = browser.new_page()
        page.goto(f"{base}/")
        page.wait_for_selector("html[data-ready]", state="attached")
        latencies(page, 5, 1, send_here, 0.25)  # warm up: the first poll, the module
        here = latencies(page, count, 7, send_here, 0.25)
        # A poll reads again at once after each answer: gaps as long as a poll_interval and
        # more land a send at every phase of the reads.
        there = latencies(page, count // 2, 8, elsewhere, 0.05 + bridge.poll_interval)
        page.close()
        reads, requests = idle_cost(browser, base, store, pages=4, seconds=idle_seconds)
    label = "long-polling (WSGI)" if transport == "poll" else "SSE (ASGI, uvicorn)"
    return [
        *(
            Row(
                f"browser/{transport}",
                f"send_to_browser -> JS handler, {label}, sent {where}: p50 / p90 / p99 / max",
                " / ".join(f"{percentile(got, q) * 1e3:.1f}" for q in (50, 90, 99, 100)) + " ms",
                f"{len(got)} messages, broadcast",
            )
            for where, got in (("by the server's process", here), ("by another process", there))
        ),
        Row(
            f"browser/{transport}",
            f"idle waiting browser, {label}: store reads / requests per minute",
            f"{reads:.1f} / {requests:.1f}",
            f"poll_interval {bridge.poll_interval:g} s, poll_seconds {bridge.poll_seconds:g} s",
        ),
    ]


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    quiet_library()
    from playwright.sync_api import sync_playwright

    rows: list[Row] = []
    with Memcached() as server:
        # The other process starts before playwright's threads do (it is forked).
        ours, theirs = mp.get_context("fork").Pipe()
        other = mp.get_context("fork").Process(target=sender, args=(server.url, theirs))
        other.start()

        def elsewhere(i: int) -> float:
            ours.send(i)
            sent: float = ours.recv()
            return sent

        store = CountingStore(store_from_url(server.url))
        gaesignals.configure(store=store)
        try:
            with sync_playwright() as driver:
                browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    for transport in ("poll", "sse"):
                        rows += measure(browser, store, transport, elsewhere, args)
                finally:
                    browser.close()
        finally:
            ours.send(None)
            other.join(timeout=30)
    notes = ["one chromium page, this process sends; the machine is shared (see BENCHMARKS.md)"]
    print_table("browser signals (no target)", rows, notes)
    emit(args, rows)


if __name__ == "__main__":
    main()

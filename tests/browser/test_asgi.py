"""The bridge over ASGI (:mod:`gaesignals.browser.asgi`): the same calls and polls as over
WSGI, coroutine handlers awaited, and server-sent events that resume from Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import gaesignals
from gaesignals import send, send_to_browser
from gaesignals.asgi import SignalsMiddleware
from gaesignals.browser import Bridge, BrowserCall, csrf_token
from gaesignals.browser.asgi import BridgeASGI, wait_for_post
from gaesignals.browser.messages import wakeups
from gaesignals.queue import mailboxes
from gaesignals.stores import Store
from tests.async_support import WAIT

from .support import (
    ORIGIN,
    SECRET,
    WINDOW,
    Exchange,
    FakeTime,
    asgi_request,
    events_of,
    visitor_from_headers,
    who,
)

pytestmark = pytest.mark.gaesignals_config(secret_key=SECRET)


def asgi_bridge(time: FakeTime, **options: Any) -> BridgeASGI:
    stream = {k: options.pop(k) for k in ("stream_seconds", "keepalive_seconds") if k in options}
    bridge = Bridge(identify=visitor_from_headers, clock=time.clock, **options)
    return BridgeASGI(bridge, sleep=time.asleep, **stream)


def test_a_call_over_asgi_awaits_a_coroutine_handler(gaesignals_store: Store) -> None:
    """A call declared ``delayed=False`` runs plain and ``async def`` handlers before its
    answer; a bad CSRF token is refused as over WSGI."""
    got: list[Any] = []

    async def greet(call: BrowserCall) -> None:
        got.append(("awaited", call["data"], call["user"]))

    gaesignals.connect("greet", greet)
    gaesignals.connect("greet", got.append)
    gaesignals.declare("greet", from_browser=True, delayed=False)
    app = asgi_bridge(FakeTime())
    headers = {
        "Content-Type": "application/json",
        "Origin": ORIGIN,
        "Host": "localhost:80",
        "X-GaeSignals-CSRF": csrf_token("s-1"),
        **who("ann", "s-1"),
    }
    answer = asgi_request(
        app, "/signals/call/greet", method="POST", headers=headers, body=b'{"data": 7}'
    )
    assert answer.status == 200 and answer.json() == {"ok": True}
    assert got[0] == ("awaited", 7, "ann") and got[1]["data"] == 7
    headers["X-GaeSignals-CSRF"] = "forged"
    refused = asgi_request(
        app, "/signals/call/greet", method="POST", headers=headers, body=b'{"data": 8}'
    )
    assert refused.status == 403 and refused.json() == {"ok": False, "error": "forbidden"}
    assert len(got) == 2


def test_a_long_poll_over_asgi_answers_once_a_message_arrives(gaesignals_store: Store) -> None:
    """The ASGI poll waits by awaiting, reads once per interval, and answers with the first
    message; its cursor resumes over WSGI as well."""
    time = FakeTime()
    app = asgi_bridge(time, poll_seconds=20, poll_interval=1)
    query = f"window={WINDOW}"
    cursor = asgi_request(app, "/signals/poll", query=query).json()["cursor"]
    time.on_sleep = lambda n: send_to_browser("late", n, broadcast=True) if n == 2 else None
    answer = asgi_request(app, "/signals/poll", query=f"{query}&cursor={cursor}").json()
    assert [m["signal"] for m in answer["messages"]] == ["late"] and time.sleeps == [1, 1]


def test_events_stream_messages_as_they_are_read(gaesignals_store: Store) -> None:
    """A stream starts with ``ready`` (its cursor as id), writes each message read, keeps
    quiet stretches alive with comments, and ends after ``stream_seconds``."""
    time = FakeTime()
    app = asgi_bridge(time, poll_interval=1, stream_seconds=6, keepalive_seconds=3)
    time.on_sleep = lambda n: send_to_browser("tick", n, broadcast=True) if n == 1 else None
    answer = asgi_request(app, "/signals/events", query=f"window={WINDOW}")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    events = events_of(answer.content)
    assert [e["event"] for e in events] == ["ready", "message"]
    assert json.loads(events[1]["data"])["data"] == 1 and events[1]["id"]
    assert b": keep-alive" in answer.content and answer.sent[-1]["more_body"] is False


def test_events_resume_from_the_last_event_id(gaesignals_store: Store) -> None:
    """A stream reopened with Last-Event-ID sends what was posted since, and only that; one
    whose messages were lost starts with a reset."""
    time = FakeTime()
    app = asgi_bridge(time, poll_interval=1, stream_seconds=1)
    first = events_of(asgi_request(app, "/signals/events", query=f"window={WINDOW}").content)
    send_to_browser("one", 1, window=WINDOW)
    send_to_browser("two", 2, window=WINDOW)
    headers = {"Last-Event-ID": first[-1]["id"]}
    again = events_of(
        asgi_request(app, "/signals/events", query=f"window={WINDOW}", headers=headers).content
    )
    assert [json.loads(e["data"]).get("signal") for e in again] == [None, "one", "two"]
    with gaesignals_store.connection() as conn:
        conn.delete_many([mailboxes.mailbox_key("w", WINDOW, "")])
    headers = {"Last-Event-ID": again[-1]["id"]}
    lost = events_of(
        asgi_request(app, "/signals/events", query=f"window={WINDOW}", headers=headers).content
    )
    assert [e["event"] for e in lost] == ["ready", "reset"]


def test_a_stream_ends_when_the_browser_leaves(gaesignals_store: Store) -> None:
    """A browser that disconnects ends its stream before its time is spent."""
    time = FakeTime()
    app = asgi_bridge(time, poll_interval=1, stream_seconds=50)
    exchange = Exchange()
    time.on_sleep = lambda n: exchange.disconnect.set() if n == 3 else None
    asgi_request(app, "/signals/events", query=f"window={WINDOW}", exchange=exchange)
    assert len(time.sleeps) == 3 and exchange.sent[-1].get("more_body") is True


def test_outside_the_prefix_is_not_found_and_lifespan_is_acknowledged(
    gaesignals_store: Store,
) -> None:
    """A path outside the prefix is 404; a server's lifespan start and stop are answered."""
    app = asgi_bridge(FakeTime())
    assert asgi_request(app, "/elsewhere").status == 404
    assert asgi_request(app, "/signals/events", method="POST").status == 405
    assert asgi_request(app, "/signals/events").status == 400  # no window id
    sent: list[Any] = []
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> Any:
        return next(messages)

    async def send_(message: Any) -> None:
        sent.append(message["type"])

    asyncio.run(app({"type": "lifespan"}, receive, send_))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_the_asgi_middleware_never_delivers_on_a_poll_or_a_stream(
    gaesignals_store: Store,
) -> None:
    """The ASGI SignalsMiddleware in front of the bridge delivers on other requests only."""
    delivered: list[object] = []
    time = FakeTime()
    app = SignalsMiddleware(
        asgi_bridge(time, poll_seconds=1, poll_interval=1, stream_seconds=1),
        {"work": delivered.append},
    )
    send("work", 1)
    asgi_request(app, "/signals/poll", query=f"window={WINDOW}&cursor=w.000000.0.")
    asgi_request(app, "/signals/events", query=f"window={WINDOW}")
    assert delivered == []
    asgi_request(app, "/signals/client.js")
    assert delivered == [1]


def test_a_waiting_coroutine_wakes_at_a_post_of_this_process(gaesignals_store: Store) -> None:
    """``wait_for_post`` returns at a post from another thread, long before its time, and at
    once when a post came since the generation it was given."""
    seen = wakeups.generation

    async def wait_then_post() -> None:
        waiting = asyncio.ensure_future(wait_for_post(WAIT * 10, seen))
        await asyncio.sleep(0)
        await asyncio.to_thread(send_to_browser, "hello", 1, broadcast=True)
        await asyncio.wait_for(waiting, WAIT)
        await asyncio.wait_for(wait_for_post(WAIT * 10, seen), WAIT)

    asyncio.run(wait_then_post())
    assert wakeups.generation > seen


def test_last_event_id_wins_over_the_cursor_in_the_url(gaesignals_store: Store) -> None:
    """An EventSource reconnects to its first URL (with the cursor it started from) and
    sends its last event's id: the id is what the stream resumes from."""
    time = FakeTime()
    app = asgi_bridge(time, poll_interval=1, stream_seconds=1)
    start = events_of(asgi_request(app, "/signals/events", query=f"window={WINDOW}").content)
    send_to_browser("seen", 1, window=WINDOW)
    query = f"window={WINDOW}&cursor={start[-1]['id']}"
    seen = events_of(asgi_request(app, "/signals/events", query=query).content)
    assert [e["event"] for e in seen] == ["ready", "message"]
    headers = {"Last-Event-ID": seen[-1]["id"]}
    resumed = events_of(asgi_request(app, "/signals/events", query=query, headers=headers).content)
    assert [e["event"] for e in resumed] == ["ready"]

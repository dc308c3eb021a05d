"""Python to the browser through the WSGI bridge: ``client.js`` served, every target of
:func:`~gaesignals.send_to_browser` reaching the right pages, the long poll's waiting, and
a page resuming from its cursor or told to reset."""

from __future__ import annotations

import pytest
import webtest

import gaesignals
from gaesignals import (
    PayloadTooLarge,
    SignalsMiddleware,
    UnserializablePayload,
    send,
    send_to_browser,
)
from gaesignals.browser import Bridge
from gaesignals.queue import mailboxes
from gaesignals.stores import Store
from gaesignals.testing import CountingStore

from .support import (
    OTHER_WINDOW,
    SECRET,
    WINDOW,
    FakeTime,
    bridge_app,
    poll,
    signals_of,
    visitor_from_headers,
)

pytestmark = pytest.mark.gaesignals_config(secret_key=SECRET)


def test_the_client_and_its_types_are_served(gaesignals_store: Store) -> None:
    """``client.js`` is served as JavaScript and ``client.d.ts`` beside it; other paths
    below the prefix are 404, and so is anything outside it."""
    app = bridge_app()
    script = app.get("/signals/client.js", status=200)
    assert script.content_type == "text/javascript"
    assert b"export async function call" in script.body
    assert script.headers["X-Content-Type-Options"] == "nosniff"
    types = app.get("/signals/client.d.ts", status=200)
    assert b"export function connect" in types.body
    assert app.get("/signals/nothing", status=404).json["ok"] is False
    app.get("/elsewhere/client.js", status=404)
    app.post("/signals/client.js", status=405)


def test_a_new_page_is_answered_at_once_with_its_cursor(gaesignals_store: Store) -> None:
    """A first poll (no cursor) does not wait: it brings what its window was sent already,
    none of the broadcasts before it, and the cursor to go on from."""
    send_to_browser("early", 1, window=WINDOW)
    send_to_browser("before", 2, broadcast=True)
    time = FakeTime()
    first = poll(bridge_app(time), window=WINDOW)
    assert signals_of(first) == [("early", 1)] and time.sleeps == []
    assert first["cursor"] and first["reset"] is False


def test_each_target_reaches_its_pages_only(gaesignals_store: Store) -> None:
    """Window, session, user and broadcast messages reach exactly the pages they name: two
    visitors, two windows each."""
    app = bridge_app(FakeTime(), poll_seconds=1, poll_interval=1)
    pages = {
        ("ann", "s-ann", WINDOW): "",
        ("ann", "s-ann-2", OTHER_WINDOW): "",
        ("bob", "s-bob", "window-c3"): "",
        (None, "s-anon", "window-d4"): "",
    }
    for (user, session, window), _ in pages.items():
        pages[(user, session, window)] = poll(app, window=window, user=user, session=session)[
            "cursor"
        ]
    send_to_browser("one-window", 1, window=OTHER_WINDOW)
    send_to_browser("one-session", 2, session="s-bob")
    send_to_browser("one-user", 3, user="ann")
    send_to_browser("everyone", 4, broadcast=True)
    got = {
        window: signals_of(poll(app, cursor, window=window, user=user, session=session))
        for (user, session, window), cursor in pages.items()
    }
    assert got == {
        WINDOW: [("everyone", 4), ("one-user", 3)],
        OTHER_WINDOW: [("one-window", 1), ("everyone", 4), ("one-user", 3)],
        "window-c3": [("everyone", 4), ("one-session", 2)],
        "window-d4": [("everyone", 4)],
    }


def test_a_page_in_several_targets_gets_a_message_once(gaesignals_store: Store) -> None:
    """A message sent to a page's window and its user reads once from one poll."""
    app = bridge_app(FakeTime())
    cursor = poll(app, user="ann")["cursor"]
    send_to_browser("both", 1, window=WINDOW, user="ann")
    assert signals_of(poll(app, cursor, user="ann")) == [("both", 1)]


def test_a_long_poll_answers_once_a_message_arrives(gaesignals_store: Store) -> None:
    """A waiting poll reads the cache once per interval and answers at the first read that
    finds a message."""
    time = FakeTime()
    app = bridge_app(time, poll_seconds=20, poll_interval=1)
    cursor = poll(app)["cursor"]
    time.on_sleep = lambda n: send_to_browser("late", n, broadcast=True) if n == 3 else None
    answer = poll(app, cursor)
    assert signals_of(answer) == [("late", 3)] and time.sleeps == [1, 1, 1]


def test_a_long_poll_with_nothing_to_read_ends_within_its_time(gaesignals_store: Store) -> None:
    """With nothing sent, a poll reads once per interval and answers empty once
    ``poll_seconds`` are spent, with the cursor unchanged."""
    time = FakeTime()
    app = bridge_app(time, poll_seconds=5, poll_interval=2)
    cursor = poll(app)["cursor"]
    answer = poll(app, cursor)
    assert answer == {"cursor": cursor, "reset": False, "messages": []}
    assert time.sleeps == [2, 2, 1]


def test_a_poll_reads_the_cache_once_per_wait(gaesignals_store: Store) -> None:
    """Each internal poll is one batched read of the page's mailboxes, nothing else."""
    time = FakeTime()
    cursor = poll(bridge_app(time), user="ann", session="s-1")["cursor"]
    counting = CountingStore(gaesignals_store)
    gaesignals.configure(counting, secret_key=SECRET)
    app = bridge_app(time, poll_seconds=3, poll_interval=1)
    poll(app, cursor, user="ann", session="s-1")
    assert dict(counting.calls) == {"gets_many": 4} and len(time.sleeps) == 3


def test_a_page_resumes_from_its_cursor(gaesignals_store: Store) -> None:
    """Messages sent while a page was not polling arrive at its next poll, in order, once."""
    app = bridge_app(FakeTime())
    cursor = poll(app)["cursor"]
    for n in range(3):
        send_to_browser("tick", n, broadcast=True)
    first = poll(app, cursor)
    assert signals_of(first) == [("tick", 0), ("tick", 1), ("tick", 2)]
    send_to_browser("tick", 3, broadcast=True)
    assert signals_of(poll(app, first["cursor"])) == [("tick", 3)]
    assert signals_of(poll(app, first["cursor"])) == [("tick", 3)]  # the cursor is the page's


def test_a_page_whose_messages_were_lost_is_told_to_reset(gaesignals_store: Store) -> None:
    """When the cache lost a mailbox the page had read from, its poll says reset (and the
    cursor moves on, so the next poll does not)."""
    app = bridge_app(FakeTime())
    cursor = poll(app, user="ann")["cursor"]
    send_to_browser("hello", 1, user="ann")
    seen = poll(app, cursor, user="ann")["cursor"]
    key = mailboxes.mailbox_key("u", "ann", "")
    with gaesignals_store.connection() as conn:
        conn.delete_many([key])
    lost = poll(app, seen, user="ann")
    assert lost["reset"] is True and lost["messages"] == []
    send_to_browser("again", 2, user="ann")
    after = poll(app, lost["cursor"], user="ann")
    assert after["reset"] is False and signals_of(after) == [("again", 2)]


def test_garbage_in_a_mailbox_never_breaks_a_poll(gaesignals_store: Store) -> None:
    """Forged lines, bytes that are not JSON and JSON that is not a message are skipped."""
    key = mailboxes.mailbox_key("b", "", "")
    app = bridge_app(FakeTime())
    cursor = poll(app)["cursor"]
    unsigned = mailboxes.message_line(key, "0123456789abcdef", b'{"signal":"x","data":1}', [])
    not_json = mailboxes.message_line(key, "0123456789abcdee", b"{nope", [SECRET.encode()])
    not_ours = mailboxes.message_line(key, "0123456789abcded", b"[1,2]", [SECRET.encode()])
    mailboxes.post(gaesignals_store, {key: unsigned + not_json + not_ours + b"\xff\n"})
    send_to_browser("real", 1, broadcast=True)
    assert signals_of(poll(app, cursor)) == [("real", 1)]


def test_a_bad_window_or_cursor(gaesignals_store: Store) -> None:
    """A poll without a window id is a bad request; a cursor that does not parse counts as
    none (the page starts anew)."""
    app = bridge_app(FakeTime())
    assert app.get("/signals/poll", status=400).json == {"ok": False, "error": "bad-request"}
    app.get("/signals/poll", {"window": "short"}, status=400)
    assert poll(app, "garbage-!!-" * 100)["reset"] is False
    app.post("/signals/poll", status=405)


def test_sending_to_browsers_takes_json_and_a_target(gaesignals_store: Store) -> None:
    """Data that is not JSON, too large, or no target at all is refused before any write."""
    with pytest.raises(UnserializablePayload):
        send_to_browser("x", {1, 2}, broadcast=True)
    with pytest.raises(UnserializablePayload):
        send_to_browser("x", float("nan"), broadcast=True)
    with pytest.raises(PayloadTooLarge):
        send_to_browser("x", "a" * 40_000, broadcast=True)
    with pytest.raises(ValueError):
        send_to_browser("x", 1)
    with pytest.raises(TypeError):
        send_to_browser("x", 1, user=[""])


def test_the_middleware_never_delivers_on_a_poll(gaesignals_store: Store) -> None:
    """SignalsMiddleware in front of the bridge delivers on a call, not on a long poll."""
    delivered: list[object] = []
    bridge = Bridge(identify=visitor_from_headers, poll_seconds=1, poll_interval=1)
    app = webtest.TestApp(SignalsMiddleware(bridge, {"work": delivered.append}))
    send("work", 1)
    app.get("/signals/poll", {"window": WINDOW}, status=200)
    assert delivered == []
    app.get("/signals/client.js", status=200)
    assert delivered == [1]

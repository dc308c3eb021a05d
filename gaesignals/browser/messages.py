"""Python to the browser: :func:`send_to_browser` posts to mailboxes, an :class:`Inbox` reads
a page's mailboxes for its poll, and the cursor a page holds says where it is in each.

A page reads four mailboxes (:mod:`gaesignals.queue.mailboxes`): its window's, its session's,
its user's and the broadcast ring. Its cursor is text, opaque to it: for each mailbox a short
tag of the mailbox's key (a page whose user changed starts that mailbox anew) and its mark.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..config import Settings, get_settings
from ..exceptions import PayloadTooLarge, UnserializablePayload
from ..keys import check_name
from ..queue import mailboxes
from ..queue.mailboxes import Mark
from .visitors import Visitor, session_tag

#: The largest message, as JSON: a mailbox keeps many, and every poll reads them all.
MAX_MESSAGE_BYTES = 32 * 1024
#: What a window id looks like (the client makes a UUID per page).
WINDOW_ID = re.compile(r"[A-Za-z0-9_-]{8,64}\Z")
#: The longest cursor read; a longer one (or one that does not parse) counts as none.
MAX_CURSOR = 512
_MARK = re.compile(r"([wsub])\.([0-9a-f]{6})\.([0-9]{1,20})\.([0-9a-g]{0,16})\Z")


class Wakeups:
    """Waiting polls of this process, woken by a post from this process at once (a post from
    another process is seen at the next cache read). A generation number counts the posts, so
    a waiter that read the cache before a post does not sleep past it."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.generation = 0
        #: Called at each post (from the posting thread): how an event loop's waiters hear.
        self._listeners: set[Callable[[], None]] = set()

    def notify(self) -> None:
        with self._changed:
            self.generation += 1
            self._changed.notify_all()
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def listen(self, listener: Callable[[], None]) -> None:
        with self._changed:
            self._listeners.add(listener)

    def unlisten(self, listener: Callable[[], None]) -> None:
        with self._changed:
            self._listeners.discard(listener)

    def wait(self, seconds: float, seen: int) -> None:
        """Sleep up to ``seconds``, less if a post came since generation ``seen``."""
        with self._changed:
            self._changed.wait_for(lambda: self.generation != seen, seconds)


wakeups = Wakeups()


def _names(target: str | Iterable[str] | None, what: str) -> list[str]:
    if target is None:
        return []
    names = [target] if isinstance(target, str) else list(target)
    if not all(isinstance(name, str) and name for name in names):
        raise TypeError(f"{what} must be a non-empty str or an iterable of them, got {target!r}")
    return names


def send_to_browser(
    name: str,
    data: Any = None,
    *,
    window: str | Iterable[str] | None = None,
    session: str | Iterable[str] | None = None,
    user: str | Iterable[str] | None = None,
    broadcast: bool = False,
) -> None:
    """Post ``data`` (JSON) to the JavaScript handlers of ``name``: in one page (``window``, as
    a :class:`~gaesignals.browser.BrowserCall` names it), every page of a session (its key or
    tag), of a user (their id), or of every visitor (``broadcast``). Each target may be one or
    several. A page in several targets gets the message once per poll that finds it.

    Raises :class:`~gaesignals.UnserializablePayload` (not JSON),
    :class:`~gaesignals.PayloadTooLarge`, :class:`~gaesignals.StoreUnavailable`.
    """
    check_name(name)
    settings = get_settings()
    targets = [("w", w) for w in _names(window, "window")]
    targets += [("s", session_tag(s)) for s in _names(session, "session")]
    targets += [("u", u) for u in _names(user, "user")]
    if broadcast:
        targets.append(("b", ""))
    if not targets:
        raise ValueError("send_to_browser needs a target: window, session, user or broadcast")
    body = encode_message(name, data)
    ident = secrets.token_hex(8)
    keys = {mailboxes.mailbox_key(kind, target, settings.namespace) for kind, target in targets}
    lines = {key: mailboxes.message_line(key, ident, body, settings.secret_keys) for key in keys}
    mailboxes.post(settings.store, lines)
    wakeups.notify()


def encode_message(name: str, data: Any) -> bytes:
    """A message's JSON body, on one line; refused when it is not JSON or too large."""
    try:
        body = json.dumps({"signal": name, "data": data}, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise UnserializablePayload(
            f"cannot JSON-encode the data for browser signal {name!r}: {error}"
        ) from error
    encoded = body.encode("ascii")
    if len(encoded) > MAX_MESSAGE_BYTES:
        raise PayloadTooLarge(
            f"the message for browser signal {name!r} is {len(encoded)} bytes as JSON; "
            f"the limit is {MAX_MESSAGE_BYTES}"
        )
    return encoded


def decode_message(ident: str, body: bytes) -> dict[str, Any] | None:
    """A message as a page receives it, or None for a body that is not one of ours."""
    try:
        found = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(found, dict) or not isinstance(found.get("signal"), str):
        return None
    return {"id": ident, "signal": found["signal"], "data": found.get("data")}


@dataclass
class Batch:
    """What one read of a page's mailboxes found: new messages, whether it must reset, and
    its cursor after them."""

    messages: list[dict[str, Any]]
    reset: bool
    cursor: str


def _tag(key: str) -> str:
    return key.rpartition("{")[2][:6]


@dataclass
class Inbox:
    """A page's mailboxes and where it is in each, from the cursor it sent."""

    keys: dict[str, str]
    marks: dict[str, Mark | None] = field(default_factory=dict)
    #: Without a cursor: a new page, told its cursor at once.
    fresh: bool = False

    @classmethod
    def of(cls, visitor: Visitor, window: str, cursor: str, settings: Settings) -> Inbox:
        """The inbox of ``visitor``'s page ``window`` resuming from ``cursor`` ("" for a new
        page: it gets its window's messages from the first, the others' from now on)."""
        names = {"w": window, "b": ""}
        if visitor.session is not None:
            names["s"] = session_tag(visitor.session)
        if visitor.user is not None:
            names["u"] = visitor.user
        keys = {
            kind: mailboxes.mailbox_key(kind, n, settings.namespace) for kind, n in names.items()
        }
        held = parse_cursor(cursor)
        marks: dict[str, Mark | None] = {}
        for kind, key in keys.items():
            tag, mark = held.get(kind, ("", None))
            if tag == _tag(key):
                marks[kind] = mark
            else:
                marks[kind] = Mark(0, "") if kind == "w" else None
        return cls(keys, marks, fresh=not held)

    def read(self, settings: Settings) -> Batch:
        """One batched read of every mailbox: the new messages, and the marks moved past."""
        values = mailboxes.read(settings.store, list(self.keys.values()))
        messages: list[dict[str, Any]] = []
        seen: set[str] = set()
        reset = False
        for kind, key in self.keys.items():
            caught = mailboxes.catch_up(
                key, values.get(key), self.marks[kind], settings.secret_keys
            )
            self.marks[kind] = caught.mark
            reset = reset or caught.reset
            for ident, body in caught.messages:
                message = decode_message(ident, body)
                if message is not None and ident not in seen:
                    seen.add(ident)
                    messages.append(message)
        return Batch(messages, reset, self.cursor())

    def cursor(self) -> str:
        """The cursor of the marks held now."""
        return "-".join(
            f"{kind}.{_tag(self.keys[kind])}.{mark.next}.{mark.last}"
            for kind, mark in self.marks.items()
            if mark is not None
        )


def parse_cursor(text: str) -> dict[str, tuple[str, Mark]]:
    """Each mailbox kind's (tag, mark) in a cursor; what does not parse is left out."""
    if len(text) > MAX_CURSOR:
        return {}
    found: dict[str, tuple[str, Mark]] = {}
    for part in text.split("-"):
        matched = _MARK.match(part)
        if matched:
            kind, tag, number, last = matched.groups()
            found[kind] = (tag, Mark(int(number), last))
    return found


def check_window(window: object) -> str | None:
    """``window`` if it is a window id, else None."""
    if isinstance(window, str) and WINDOW_ID.match(window):
        return window
    return None

"""The errors gaesignals raises, all under one root.

::

    GaeSignalsError
     ├── InvalidSignalName   (also ValueError)  empty, non-str or absurdly long name
     ├── InvalidCoalesceKey  (also ValueError)  a send's coalesce key that is not a short str
     ├── ConfigurationError  (also ValueError)  bad store URL, short secret key
     │    └── MissingExtra (also ModuleNotFoundError) an optional dependency is not installed
     ├── PayloadTooLarge     (also ValueError)  one payload cannot fit in one cache item
     ├── UnserializablePayload (also TypeError) the codec cannot encode the payload
     ├── InvalidDelay        (also ValueError)  a send's delay or eta that cannot be honoured
     ├── InvalidMapping      (also TypeError)   a mapping of the wrong shape, a handler that is
     │                                          not callable
     ├── QueueFull                              the signal's pending bytes would pass the item limit
     ├── StoreUnavailable                       the cache is down, timed out or refused the call
     │    ├── PartialFailure                    a batch failed on some servers of a cluster
     │    └── Contention                        a key kept changing under every bounded attempt
     ├── BadFrame                               bytes that are not a valid frame, or refused ones
     ├── EventLoopRunning    (also RuntimeError) a synchronous call would run coroutine handlers
     │                                          inside a running event loop
     ├── Retry                                  raised by a handler: try this payload again later
     └── Reject                                 raised by a handler: dead-letter this payload now

Programmer mistakes are also ``TypeError``/``ValueError``, so code that catches those keeps
working. Errors caused by another error carry it as
``__cause__``. An error's data is in named attributes (``QueueFull.keys``); its ``str()`` is a
sentence for people.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class GaeSignalsError(Exception):
    """Root of every error this library raises on purpose."""


class InvalidSignalName(GaeSignalsError, ValueError):
    """A signal name that is empty, not a ``str``, or longer than ``MAX_NAME_LENGTH``."""


class InvalidCoalesceKey(GaeSignalsError, ValueError):
    """A send's ``coalesce=`` key that is not a ``str`` of at most 255 bytes of UTF-8; nothing
    was written. ``key`` is what was given."""

    def __init__(self, message: str, key: object) -> None:
        super().__init__(message)
        self.key = key


class ConfigurationError(GaeSignalsError, ValueError):
    """Settings that cannot work: an unknown store URL, a secret key that is too short."""


class MissingExtra(ConfigurationError, ModuleNotFoundError):
    """What the settings or an import asked for needs an extra that is not installed (a
    ``memcached://`` store without pymemcache); its ``str()`` says what to install.

    ``extra`` is the extra to install, ``name`` the module that is missing. Also a
    ``ModuleNotFoundError``, as the bare error it replaces was, so ``try: import
    gaesignals.contrib.flask`` / ``except ImportError`` keeps working."""

    def __init__(self, message: str, extra: str, name: str | None) -> None:
        super().__init__(message)
        self.msg = message  # what ImportError's str() would read, had its __init__ run
        self.extra = extra
        self.name = name


class PayloadTooLarge(GaeSignalsError, ValueError):
    """One payload, once framed, is larger than the store's item limit; nothing was written."""


class UnserializablePayload(GaeSignalsError, TypeError):
    """The payload cannot be pickled (or JSON-encoded, with the JSON codec); nothing was written."""


class InvalidDelay(GaeSignalsError, ValueError):
    """A send's ``delay`` or ``eta`` is negative, past the longest delay, naive, not a time, or
    given together; nothing was written."""


class InvalidPayloadId(GaeSignalsError, ValueError):
    """A payload id given to cancel is not one a send of that signal returned (``payload_id``:
    the text given)."""

    def __init__(self, message: str, payload_id: object) -> None:
        super().__init__(message)
        self.payload_id = payload_id


class InvalidMapping(GaeSignalsError, TypeError):
    """What was given as a signal mapping is not one: not a dict, a list of ``(name, handler)``
    pairs or a :class:`~gaesignals.SignalMapping`, or a handler in it is not callable. The
    message shows what a mapping looks like."""


class QueueFull(GaeSignalsError):
    """The signal cannot take this payload: it holds its ``max_pending``, its declared shards
    are full, it spread as wide as it gets, or the cache refused for want of memory.

    ``keys`` names every queue key left unwritten by the send that raised, ``signals`` their
    signals (for ``send_multi``, the other signals' payloads were stored). Deliver the signal
    (or send less) and try again.
    """

    #: The signals whose payloads were left unwritten (set by the send, which knows them).
    signals: tuple[str, ...] = ()
    #: The ``max_pending`` the signal reached, or None: its shards (or the cache) were full.
    cap: int | None = None

    def __init__(self, message: str, keys: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.keys: tuple[str, ...] = tuple(keys)


class StoreFull(QueueFull):
    """The cache refused to store for want of memory (memcached without eviction:
    ``SERVER_ERROR out of memory``). ``results`` says, for each key of the refused call,
    whether it was stored; ``keys`` names those that were not."""

    def __init__(self, message: str, results: Mapping[str, bool]) -> None:
        super().__init__(message, [key for key, stored in results.items() if not stored])
        self.results = dict(results)


class StoreUnavailable(GaeSignalsError):
    """The cache could not be reached or did not answer in time; the call did not take effect.

    ``send`` raises it instead of reporting success for a payload it could not store.
    """


class PartialFailure(StoreUnavailable):
    """A batched call reached some servers of a cluster and failed on others.

    ``results`` holds the answers of the servers that answered (for a write, key: applied);
    the keys it lacks may or may not have been applied.
    """

    def __init__(self, message: str, results: dict[str, object]) -> None:
        super().__init__(message)
        self.results = results


class Contention(StoreUnavailable):
    """A key changed under every one of a bounded number of attempts; ``keys`` names those
    left unwritten (``signals`` their signals, for a send). A :class:`StoreUnavailable` because
    the caller's remedy is the same."""

    signals: tuple[str, ...] = ()

    def __init__(self, message: str, keys: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.keys: tuple[str, ...] = tuple(keys)


class BadFrame(GaeSignalsError):
    """Bytes that do not parse as a frame, whose signature does not match, or whose body the
    configured codec refuses (a pickled frame while the codec is JSON)."""


class EventLoopRunning(GaeSignalsError, RuntimeError):
    """A synchronous call (``call``: :func:`~gaesignals.deliver` or
    :func:`~gaesignals.send_now`) would run coroutine ``handlers`` inside a running event
    loop, where it could only block that loop or deadlock it. Raised before anything is taken
    from the store, so nothing is lost: await the asynchronous twin instead."""

    def __init__(self, call: str, handlers: Iterable[object] = ()) -> None:
        self.call = call
        self.handlers: tuple[object, ...] = tuple(handlers)
        named = ", ".join(repr(handler) for handler in self.handlers) or "coroutine handlers"
        super().__init__(
            f"{call}() cannot run {named} inside a running event loop: "
            f"await a{call}() instead (nothing was taken from the store)"
        )


class Retry(GaeSignalsError):
    """Raised by a handler in reliable delivery: this payload failed for now and is to be
    tried again, after ``delay`` seconds if given (else its signal's backoff); it counts an
    attempt. In weak delivery it is logged and the payload is gone, as any failure."""

    def __init__(self, delay: float | None = None, reason: str = "") -> None:
        if delay is not None and (
            not isinstance(delay, int | float) or isinstance(delay, bool) or not delay >= 0
        ):
            raise ValueError(f"Retry(delay=) must be 0 or more seconds, got {delay!r}")
        super().__init__(reason or "retry requested")
        self.delay = delay
        self.reason = reason


class Reject(GaeSignalsError):
    """Raised by a handler in reliable delivery: this payload can never succeed; it goes
    straight to the signal's dead letters with ``reason``. In weak delivery it is logged and
    the payload is gone, as any failure."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason or "rejected")
        self.reason = reason

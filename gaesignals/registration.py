"""Signals declared once, and their receivers: the mapping ``deliver()`` uses by default.

The sending side and the delivering side of an app often live in different modules (a request
handler sends, a worker delivers); declaring a signal's options in one place keeps both sides
agreeing on them::

    from gaesignals import declare, receiver

    declare("audit", reliable=True, max_attempts=10)

    @receiver("user_signed_up")
    def send_welcome_mail(data): ...

``deliver()``, :class:`~gaesignals.SignalsMiddleware` and the CLI then need no mapping: they
deliver every signal that has a receiver, each in its declared mode. Signal names are exact
(``deliver`` must know every key to read), so per-user signals are listed in an explicit
mapping; such a name still takes the options of a declaration of the same name.
"""

from __future__ import annotations

import importlib
import math
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, TypeVar

from .exceptions import ConfigurationError, InvalidMapping
from .keys import check_name, signal_keys
from .queue.lease import MAX_LEASE

F = TypeVar("F", bound=Callable[..., object])

DEFAULT_LEASE = 30
DEFAULT_MAX_ATTEMPTS = 5
#: A failed reliable payload's first wait, in seconds; each next one is ``backoff`` times
#: longer, at most ``max_delay``: 1, 2, 4, 8 s across the default five attempts.
DEFAULT_RETRY_DELAY = 1.0
DEFAULT_RETRY_BACKOFF = 2.0
DEFAULT_RETRY_MAX_DELAY = 300.0
_jitter = random.Random()
MAX_SHARDS = 64
DEFAULT_MAX_CALL_BYTES = 16 * 1024
#: Who may call a signal from a browser (see SignalSpec.from_browser).
FromBrowser = bool | str | Callable[..., bool]


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """What both sides of a signal agree on.

    ``reliable`` picks the delivery mode when ``deliver`` is not told one; ``lease``,
    ``max_attempts`` and the ``retry_*`` options (:class:`RetryPolicy`) apply to reliable
    delivery; ``shards`` spreads a hot signal over several keys; ``ttl`` (seconds) drops
    payloads older than that at delivery instead of running them; ``max_pending`` is the most
    payloads it may hold (sends past it raise ``QueueFull``; see :mod:`gaesignals.queue.cap`).
    ``coalesce`` collapses the signal's pending payloads to the newest at delivery;
    ``debounce`` (seconds) makes a coalesced run wait until no newer payload came for that
    long, ``debounce_max`` (seconds) no longer than that after the run's first payload
    (:func:`check_debounce`; see the documentation's :doc:`coalescing` page).
    A signal declared with ``shards`` has exactly that many (``fixed``), and is full when they
    are; any other starts on one key and spreads itself when contended or full
    (:mod:`gaesignals.queue.spread`), which costs its senders' order across shards:
    ``shards=1`` keeps one key, and each sender's order.
    """

    name: str
    reliable: bool = False
    shards: int = 1
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    lease: int = DEFAULT_LEASE
    ttl: int | None = None
    #: How long a reliable payload waits after a failed attempt (see :class:`RetryPolicy`).
    retry_delay: float = DEFAULT_RETRY_DELAY
    retry_backoff: float = DEFAULT_RETRY_BACKOFF
    retry_max_delay: float = DEFAULT_RETRY_MAX_DELAY
    #: Declared with ``shards``: never spreads itself.
    fixed: bool = False
    coalesce: bool = False
    debounce: float | None = None
    debounce_max: float | None = None
    #: Who may call it from a browser (:mod:`gaesignals.browser`): False (nobody), True
    #: (anyone), ``"authenticated"``, or a callable ``(visitor, data) -> bool``.
    from_browser: FromBrowser = False
    #: A browser call sends it for a later delivery (True), or runs its receivers at once.
    delayed: bool = True
    #: Checks a browser call's data (raising refuses the call).
    schema: Callable[[Any], object] | None = None
    #: The largest JSON body a browser call may send, in bytes.
    max_call_bytes: int = DEFAULT_MAX_CALL_BYTES
    #: The most payloads the signal may hold; None: as many as the store has room for.
    max_pending: int | None = None

    def __post_init__(self) -> None:
        check_name(self.name)
        check_lease(self.lease)
        check_max_attempts(self.max_attempts)
        if not isinstance(self.reliable, bool):
            raise TypeError(f"reliable must be a bool, got {self.reliable!r}")
        if not isinstance(self.shards, int) or not 1 <= self.shards <= MAX_SHARDS:
            raise ValueError(f"shards must be an int in 1..{MAX_SHARDS}, got {self.shards!r}")
        if self.ttl is not None and (not isinstance(self.ttl, int) or self.ttl < 1):
            raise ValueError(f"ttl must be a positive number of seconds or None, got {self.ttl!r}")
        cap = self.max_pending
        if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
            raise ValueError(f"max_pending must be a positive number of payloads, got {cap!r}")
        RetryPolicy(self.retry_delay, self.retry_backoff, self.retry_max_delay)
        check_debounce(self.name, self.coalesce, self.debounce, self.debounce_max)
        check_browser_options(self)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long a reliable payload waits after its ``attempt``-th failure before it is tried
    again: ``delay * backoff ** (attempt - 1)`` seconds, at most ``max_delay``, lengthened by
    up to 10 % of jitter (never shortened), so that payloads failing together spread out. The
    payloads behind it are delivered meanwhile. ``delay=0`` keeps the failed payload at the
    head of its shard instead, retried first by the next delivery, and the shard's order
    holds."""

    delay: float = DEFAULT_RETRY_DELAY
    backoff: float = DEFAULT_RETRY_BACKOFF
    max_delay: float = DEFAULT_RETRY_MAX_DELAY

    def __post_init__(self) -> None:
        for what, value, least in (
            ("retry_delay", self.delay, 0.0),
            ("retry_backoff", self.backoff, 1.0),
            ("retry_max_delay", self.max_delay, 0.0),
        ):
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)
                or not least <= value <= MAX_RETRY_DELAY
            ):
                raise ValueError(
                    f"{what} must be a number of seconds in {least:g}..{MAX_RETRY_DELAY}, "
                    f"got {value!r}"
                )

    def wait(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th failure (0 with ``delay=0``)."""
        if not self.delay:
            return 0.0
        base = min(self.delay * self.backoff ** min(attempt - 1, 64), self.max_delay)
        return base * (1 + _jitter.uniform(0, 0.1))


@lru_cache(maxsize=4096)
def _default_spec(name: str) -> SignalSpec:
    """An undeclared signal's spec: frozen, so one per name serves every delivery."""
    return SignalSpec(check_name(name))


#: The longest any retry wait may be: what a send's delay may be (see gaesignals.timing).
MAX_RETRY_DELAY = 7 * 24 * 3600


def check_debounce(
    name: str, coalesce: bool, debounce: float | None, debounce_max: float | None
) -> None:
    """Refuse coalescing options that cannot work, with a :class:`ConfigurationError` that
    names the signal: ``debounce`` waits for a run of coalesced payloads to go quiet, so it
    needs ``coalesce=True``; ``debounce_max`` bounds that wait, so it needs ``debounce`` and
    is at least as long."""
    if not isinstance(coalesce, bool):
        raise ConfigurationError(f"coalesce must be a bool, got {coalesce!r}")
    for what, value in (("debounce", debounce), ("debounce_max", debounce_max)):
        if value is not None and (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not 0 < value <= MAX_RETRY_DELAY
        ):
            raise ConfigurationError(
                f"{what} of signal {name!r} must be a number of seconds in "
                f"(0, {MAX_RETRY_DELAY}] or None, got {value!r}"
            )
    if debounce is not None and not coalesce:
        raise ConfigurationError(
            f"debounce of signal {name!r} waits for its coalesced payloads to go quiet: "
            "declare it with coalesce=True too"
        )
    if debounce_max is not None and (debounce is None or debounce_max < debounce):
        raise ConfigurationError(
            f"debounce_max of signal {name!r} bounds its debounce: give a debounce too, at "
            f"most debounce_max (got debounce={debounce!r}, debounce_max={debounce_max!r})"
        )


def check_browser_options(spec: SignalSpec) -> None:
    """Refuse browser-call options that cannot work (see :class:`SignalSpec`)."""
    if spec.from_browser not in (False, True, "authenticated") and not callable(spec.from_browser):
        raise ValueError(
            "from_browser must be False, True, 'authenticated' or a callable (visitor, data), "
            f"got {spec.from_browser!r}"
        )
    if not isinstance(spec.delayed, bool):
        raise TypeError(f"delayed must be a bool, got {spec.delayed!r}")
    if spec.schema is not None and not callable(spec.schema):
        raise TypeError(f"schema must be a callable of the data, got {spec.schema!r}")
    size = spec.max_call_bytes
    if not isinstance(size, int) or isinstance(size, bool) or size < 2:
        raise ValueError(f"max_call_bytes must be an int of at least 2, got {size!r}")


def check_lease(lease: object) -> int:
    if not isinstance(lease, int) or isinstance(lease, bool) or not 1 <= lease <= MAX_LEASE:
        raise ValueError(
            f"lease must be a whole number of seconds in 1..{MAX_LEASE}, got {lease!r}"
        )
    return lease


def check_max_attempts(max_attempts: object) -> int:
    if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < 1:
        raise ValueError(f"max_attempts must be a positive int, got {max_attempts!r}")
    return max_attempts


class Registry:
    """Declared signals and connected receivers. Thread-safe; one default instance,
    :data:`registry`, backs the module-level functions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._specs: dict[str, SignalSpec] = {}
        self._receivers: dict[str, list[Callable[..., object]]] = {}
        #: Changes whenever a declaration does, so what was derived from specs can be kept.
        self.version = 0
        self._fixed: dict[str, frozenset[str]] = {}

    def declare(
        self,
        name: str,
        *,
        reliable: bool | None = None,
        shards: int | None = None,
        max_attempts: int | None = None,
        lease: int | None = None,
        ttl: int | None = None,
        retry_delay: float | None = None,
        retry_backoff: float | None = None,
        retry_max_delay: float | None = None,
        coalesce: bool | None = None,
        debounce: float | None = None,
        debounce_max: float | None = None,
        from_browser: FromBrowser | None = None,
        delayed: bool | None = None,
        schema: Callable[[Any], object] | None = None,
        max_call_bytes: int | None = None,
        max_pending: int | None = None,
    ) -> SignalSpec:
        """Declare ``name`` with options; options left out keep what an earlier declaration
        set (or the defaults). Returns the resulting spec."""
        check_name(name)
        given: dict[str, Any] = {
            "reliable": reliable,
            "shards": shards,
            "max_attempts": max_attempts,
            "lease": lease,
            "ttl": ttl,
            "retry_delay": retry_delay,
            "retry_backoff": retry_backoff,
            "retry_max_delay": retry_max_delay,
            "coalesce": coalesce,
            "debounce": debounce,
            "debounce_max": debounce_max,
            "from_browser": from_browser,
            "delayed": delayed,
            "schema": schema,
            "max_call_bytes": max_call_bytes,
            "max_pending": max_pending,
        }
        if shards is not None:
            given["fixed"] = True
        with self._lock:
            spec = replace(
                self._specs.get(name, SignalSpec(name)),
                **{k: v for k, v in given.items() if v is not None},
            )
            self._specs[name] = spec
            self.version += 1
            self._fixed.clear()
        return spec

    def fixed_queues(self, namespace: str) -> frozenset[str]:
        """The own queue keys of the signals declared with ``shards`` (which never spread)."""
        found = self._fixed.get(namespace)
        if found is None:
            with self._lock:
                specs = list(self._specs.values())
            found = frozenset(
                signal_keys(spec.name, namespace).queue for spec in specs if spec.fixed
            )
            self._fixed[namespace] = found
        return found

    def spec(self, name: str) -> SignalSpec:
        """The declared options of ``name``, or the defaults for an undeclared name."""
        found = self._specs.get(name)
        return found if found is not None else _default_spec(name)

    def shards(self, name: str) -> int:
        """How many queue keys ``name`` is spread over: cheap, as every send asks."""
        found = self._specs.get(name)
        return found.shards if found is not None else 1

    def max_pending(self, name: str) -> int | None:
        """The most payloads ``name`` may hold (None: no cap): cheap, as every send asks."""
        found = self._specs.get(name)
        return found.max_pending if found is not None else None

    def connect(self, name: str, handler: Callable[..., object], **options: Any) -> None:
        """Make ``handler`` a receiver of ``name`` (once: connecting it again does nothing).
        Keyword options declare the signal as :meth:`declare` does."""
        if not callable(handler):
            raise InvalidMapping(
                f"the handler {handler!r} of signal {name!r} is not callable: a handler is a "
                "function (or any callable) of one payload"
            )
        check_name(name)
        if options:
            self.declare(name, **options)
        with self._lock:
            handlers = self._receivers.setdefault(name, [])
            if handler not in handlers:
                handlers.append(handler)

    def disconnect(self, name: str, handler: Callable[..., object]) -> bool:
        """Remove ``handler`` from ``name``'s receivers; True if it was one."""
        with self._lock:
            handlers = self._receivers.get(name, [])
            if handler not in handlers:
                return False
            handlers.remove(handler)
            if not handlers:
                del self._receivers[name]
            return True

    def receiver(self, *names: str, **options: Any) -> Callable[[F], F]:
        """Decorator form of :meth:`connect`, for one name or several."""
        if not names:
            raise TypeError("receiver() needs at least one signal name")

        def decorate(handler: F) -> F:
            for name in names:
                self.connect(name, handler, **options)
            return handler

        return decorate

    def receivers(self, name: str) -> tuple[Callable[..., object], ...]:
        return tuple(self._receivers.get(name, ()))

    def names(self) -> list[str]:
        """The signals with at least one receiver, in order of first connection."""
        return list(self._receivers)

    def declared(self) -> list[str]:
        """The signals declared with options (:meth:`declare`), in order of first declaration."""
        return list(self._specs)

    def clear(self) -> None:
        """Forget every declaration and receiver (for tests)."""
        with self._lock:
            self._fixed.clear()
            self._specs.clear()
            self._receivers.clear()
            self.version += 1


#: The default registry behind :func:`declare`, :func:`receiver`, :func:`connect`.
registry = Registry()


def declare(
    name: str,
    *,
    reliable: bool | None = None,
    shards: int | None = None,
    max_attempts: int | None = None,
    lease: int | None = None,
    ttl: int | None = None,
    retry_delay: float | None = None,
    retry_backoff: float | None = None,
    retry_max_delay: float | None = None,
    coalesce: bool | None = None,
    debounce: float | None = None,
    debounce_max: float | None = None,
    from_browser: FromBrowser | None = None,
    delayed: bool | None = None,
    schema: Callable[[Any], object] | None = None,
    max_call_bytes: int | None = None,
    max_pending: int | None = None,
) -> SignalSpec:
    """Declare a signal's options once for senders and deliverers (see :class:`SignalSpec`);
    ``from_browser``, ``delayed``, ``schema`` and ``max_call_bytes`` say who may call it from a
    browser and how (see :mod:`gaesignals.browser`).

    ``coalesce=True``: a delivery hands the handlers only the newest of the signal's pending
    payloads (of each key a send's ``coalesce=`` gives); ``debounce`` and ``debounce_max``
    (seconds) hold such a run back until it goes quiet, or for at most ``debounce_max``.
    Raises :class:`~gaesignals.ConfigurationError` for options that cannot work together."""
    return registry.declare(
        name,
        reliable=reliable,
        shards=shards,
        max_attempts=max_attempts,
        lease=lease,
        ttl=ttl,
        retry_delay=retry_delay,
        retry_backoff=retry_backoff,
        retry_max_delay=retry_max_delay,
        coalesce=coalesce,
        debounce=debounce,
        debounce_max=debounce_max,
        from_browser=from_browser,
        delayed=delayed,
        schema=schema,
        max_call_bytes=max_call_bytes,
        max_pending=max_pending,
    )


def connect(name: str, handler: Callable[..., object], **options: Any) -> None:
    """Make ``handler`` a receiver of ``name`` in the default registry."""
    registry.connect(name, handler, **options)


def disconnect(name: str, handler: Callable[..., object]) -> bool:
    """Remove ``handler`` from ``name``'s receivers; True if it was one."""
    return registry.disconnect(name, handler)


def receiver(*names: str, **options: Any) -> Callable[[F], F]:
    """``@receiver("name")``: connect the decorated function to one or more signals."""
    return registry.receiver(*names, **options)


def autodiscover(packages: Iterable[str], module_name: str = "signals") -> list[str]:
    """Import ``<package>.<module_name>`` for each package that has one, so the receivers it
    declares are connected; returns the modules imported.

    A package without such a module is skipped; an error raised inside one propagates, so a
    broken receivers module is never silently ignored.
    """
    imported = []
    for package in packages:
        target = f"{package}.{module_name}"
        try:
            importlib.import_module(target)
        except ModuleNotFoundError as error:
            if error.name != target:  # a missing package, or a bad import inside the module
                raise
            continue
        imported.append(target)
    return imported

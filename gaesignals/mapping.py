"""Signal names and their handlers: what :func:`~gaesignals.deliver` runs.

A :class:`SignalMapping` is validated once and reused across deliveries; the delivery side keeps
what it derives from one (handlers made ready, key layouts) beside it, not in it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from .coroutines import blocking, is_coroutine_handler
from .exceptions import InvalidMapping
from .keys import check_name
from .registration import (
    DEFAULT_RETRY_BACKOFF,
    DEFAULT_RETRY_DELAY,
    DEFAULT_RETRY_MAX_DELAY,
    Registry,
    RetryPolicy,
    SignalSpec,
    check_lease,
    check_max_attempts,
    registry,
)

#: A plain function of one payload, or an ``async def`` one (its coroutine is awaited).
Handler = Callable[..., object]
HandlerSpec = Handler | Sequence[Handler]
F = TypeVar("F", bound=Handler)


def pass_signal_name(handler: F) -> F:
    """Mark a handler that wants the signal's name: called ``handler(data, signal_name=name)``.

    Useful when one handler serves many per-user signals (``user_<id>_password_change``).
    """
    handler.__gaesignals_pass_name__ = True  # type: ignore[attr-defined]
    return handler


class SignalMapping:
    """Signal names and their handlers, validated once and reusable across deliveries.

    Built from a list of ``(name, handler)`` pairs (a name may repeat; its handlers add up in
    order), a dict, or another mapping. A handler is one callable or a list of them.
    ``lease``, ``max_attempts`` and the ``retry_*`` options override, for this mapping, what
    each signal declared (see :func:`~gaesignals.declare`); left out, the declaration or the
    defaults apply.

    A handler may be an ``async def`` function: delivery awaits it, in order, one payload at
    a time (see :mod:`gaesignals.coroutines`); :attr:`coroutine_handlers` lists them.
    """

    def __init__(
        self,
        mapping: SignalMapping | Mapping[str, HandlerSpec] | Iterable[tuple[str, HandlerSpec]] = (),
        *,
        lease: int | None = None,
        max_attempts: int | None = None,
        retry_delay: float | None = None,
        retry_backoff: float | None = None,
        retry_max_delay: float | None = None,
    ) -> None:
        self.lease = None if lease is None else check_lease(lease)
        self.max_attempts = None if max_attempts is None else check_max_attempts(max_attempts)
        self.retry = RetryOverride(retry_delay, retry_backoff, retry_max_delay)
        if isinstance(mapping, SignalMapping):
            self.lease = mapping.lease if lease is None else self.lease
            self.max_attempts = mapping.max_attempts if max_attempts is None else self.max_attempts
            self.retry = mapping.retry.under(self.retry)
        self._handlers: dict[str, tuple[Handler, ...]] = {}
        # Kept until a declaration changes (delivery keeps what it derives from them).
        self._specs: tuple[Registry, int, dict[str, SignalSpec]] | None = None
        for name, handlers in _pairs(mapping):
            self._handlers[check_name(name)] = self._handlers.get(name, ()) + handlers
        #: The handlers that are coroutine functions, which a synchronous delivery refuses
        #: inside a running event loop.
        self.coroutine_handlers: tuple[Handler, ...] = tuple(
            handler
            for handlers in self._handlers.values()
            for handler in handlers
            if is_coroutine_handler(handler)
        )

    @classmethod
    def coerce(cls, mapping: Any) -> SignalMapping:
        """Return ``mapping`` if it is a :class:`SignalMapping`, else build one from it;
        ``None`` means the receivers of the default registry, as they are at this moment."""
        if mapping is None:
            return cls([(name, registry.receivers(name)) for name in registry.names()])
        return mapping if isinstance(mapping, SignalMapping) else cls(mapping)

    def __repr__(self) -> str:
        return f"SignalMapping({list(self._handlers)!r})"

    def __len__(self) -> int:
        return len(self._handlers)

    def __iter__(self) -> Iterator[str]:
        return iter(self._handlers)

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def items(self) -> Iterator[tuple[str, tuple[Handler, ...]]]:
        return iter(self._handlers.items())

    def handlers(self, name: str) -> tuple[Handler, ...]:
        return self._handlers[name]

    def specs(self, declared: Registry) -> dict[str, SignalSpec]:
        """Each signal's declaration in ``declared`` (kept until a declaration changes)."""
        kept = self._specs
        if kept is None or kept[0] is not declared or kept[1] != declared.version:
            version = declared.version
            kept = self._specs = (declared, version, {n: declared.spec(n) for n in self})
        return kept[2]

    def subset(self, names: Iterable[str]) -> SignalMapping:
        """The same mapping restricted to ``names``, keeping its overrides."""
        return SignalMapping(
            [(name, self._handlers[name]) for name in names],
            lease=self.lease,
            max_attempts=self.max_attempts,
            retry_delay=self.retry.delay,
            retry_backoff=self.retry.backoff,
            retry_max_delay=self.retry.max_delay,
        )


MappingArg = SignalMapping | Mapping[str, HandlerSpec] | Iterable[tuple[str, HandlerSpec]]

#: What every refused mapping's message ends with: the shapes a mapping can take.
SHAPES = (
    "a mapping is a dict {'signal_name': handler}, a list of ('signal_name', handler) pairs "
    "or a SignalMapping, and a handler is a callable (or a list of callables)"
)


def _pairs(mapping: object) -> Iterator[tuple[str, tuple[Handler, ...]]]:
    """Each ``(name, handlers)`` of ``mapping``, or :class:`InvalidMapping` saying what a
    mapping looks like: a string iterates as letters, which read as a pair of the wrong
    shape and told nobody what was wrong."""
    if isinstance(mapping, SignalMapping | Mapping):
        pairs: Iterable[object] = mapping.items()
    elif isinstance(mapping, Iterable) and not isinstance(mapping, str | bytes | bytearray):
        pairs = mapping
    else:
        raise InvalidMapping(f"expected a signal mapping, got {mapping!r}: {SHAPES}")
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise InvalidMapping(
                f"expected a ('signal_name', handler) pair, got {pair!r}: {SHAPES}"
            )
        name, spec = pair
        handlers = tuple(spec) if isinstance(spec, list | tuple) else (spec,)
        for handler in handlers:
            if not callable(handler):
                raise InvalidMapping(
                    f"the handler {handler!r} of signal {name!r} is not callable: {SHAPES}"
                )
        yield name, handlers


@dataclass(frozen=True, slots=True)
class RetryOverride:
    """Retry options given for a mapping or a delivery, each None where not given."""

    delay: float | None = None
    backoff: float | None = None
    max_delay: float | None = None

    def __post_init__(self) -> None:
        RetryPolicy(  # checked now, where they were given
            DEFAULT_RETRY_DELAY if self.delay is None else self.delay,
            DEFAULT_RETRY_BACKOFF if self.backoff is None else self.backoff,
            DEFAULT_RETRY_MAX_DELAY if self.max_delay is None else self.max_delay,
        )

    def under(self, top: RetryOverride) -> RetryOverride:
        """These options with ``top``'s wherever ``top`` gives one."""
        return RetryOverride(
            self.delay if top.delay is None else top.delay,
            self.backoff if top.backoff is None else top.backoff,
            self.max_delay if top.max_delay is None else top.max_delay,
        )

    def policy(self, spec: SignalSpec) -> RetryPolicy:
        """The policy for a signal declared ``spec``: these options over its declaration."""
        return RetryPolicy(
            spec.retry_delay if self.delay is None else self.delay,
            spec.retry_backoff if self.backoff is None else self.backoff,
            spec.retry_max_delay if self.max_delay is None else self.max_delay,
        )


def passes_name(handler: Handler) -> bool:
    """Whether ``handler`` was marked with :func:`pass_signal_name`."""
    return bool(getattr(handler, "__gaesignals_pass_name__", False))


def call_form(handler: Handler, name: str) -> Callable[[Any], object]:
    """How delivery calls ``handler`` on one payload of signal ``name``: with the name if it
    asked for it, and run to its end if it is a coroutine function. Resolved once, not per
    payload."""
    call = partial(handler, signal_name=name) if passes_name(handler) else handler
    return blocking(call) if is_coroutine_handler(handler) else call

"""The delivering side: :func:`deliver`, weak or reliable, and dead letters.

:mod:`.weak` takes every pending payload at most once; :mod:`.reliable` holds a lock per shard
with a lease and delivers at least once; :mod:`.dead_lettering` keeps what failed too often;
:mod:`.runner` runs one signal's handlers on its payloads; :mod:`.plan` keeps what deliveries
derive from a mapping.
"""

from __future__ import annotations

from ..config import get_settings
from ..coroutines import in_worker, refuse_running_loop, session
from ..mapping import (
    Handler,
    HandlerSpec,
    MappingArg,
    RetryOverride,
    SignalMapping,
    pass_signal_name,
)
from ..registration import RetryPolicy, check_lease, check_max_attempts, registry
from .dead_lettering import (
    DeadLetter,
    dead_letter_details,
    dead_letters,
    purge_dead_letters,
    requeue_dead_letters,
)
from .reliable import deliver_reliable
from .weak import deliver_weak


def deliver(
    mapping: MappingArg | None = None,
    reliable: bool | None = None,
    *,
    lease: int | None = None,
    max_attempts: int | None = None,
    retry_delay: float | None = None,
    retry_backoff: float | None = None,
    retry_max_delay: float | None = None,
    limit: int | None = None,
) -> int:
    """Run the handlers of every signal in ``mapping`` on its pending payloads.

    ``mapping`` left out (``None``) means every signal with a receiver in the default registry
    (:func:`~gaesignals.receiver`). Each handler is called ``handler(data)`` once per payload,
    in send order within a signal (within a shard, for a signal declared with ``shards``), and
    never on one older than a declared ``ttl``. Returns how many payloads were delivered with
    every handler succeeding. Handler errors are logged (logger ``gaesignals``) and never
    raised; a store outage raises :class:`~gaesignals.StoreUnavailable`.

    ``reliable`` chooses at-least-once delivery under a lock with a ``lease`` in seconds for
    every signal; left out, each signal gets the mode it was declared with (weak unless
    declared ``reliable=True``). ``lease``, ``max_attempts`` and the ``retry_*`` options (see
    :class:`~gaesignals.registration.RetryPolicy`) override the mapping's and the declarations'
    values.

    ``limit`` takes at most that many payloads of each signal in this delivery, the oldest of
    each key first, and leaves the rest queued for the next delivery or another deliverer
    (``None``: everything pending). Deliverers sharing a backlog this way each take a
    different part; see :doc:`/delivering`.

    ``async def`` handlers are awaited, in order, one payload at a time, on an event loop this
    delivery starts for them and closes before returning. Inside a running event loop a
    mapping with coroutine handlers raises :class:`~gaesignals.EventLoopRunning` before
    anything is taken: await :func:`adeliver` there.
    """
    signals = SignalMapping.coerce(mapping)
    limit = None if limit is None else check_limit(limit)
    if not signals:
        return 0
    retry = RetryOverride(retry_delay, retry_backoff, retry_max_delay)
    if not signals.coroutine_handlers:
        return _deliver(signals, reliable, lease, max_attempts, retry, limit)
    refuse_running_loop("deliver", signals.coroutine_handlers)
    with session():
        return _deliver(signals, reliable, lease, max_attempts, retry, limit)


def check_limit(limit: object) -> int:
    """``limit`` if it is a positive int (how many payloads of each signal one delivery
    takes); a ValueError saying what it got if not."""
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    return limit


async def adeliver(
    mapping: MappingArg | None = None,
    reliable: bool | None = None,
    *,
    lease: int | None = None,
    max_attempts: int | None = None,
    retry_delay: float | None = None,
    retry_backoff: float | None = None,
    retry_max_delay: float | None = None,
    limit: int | None = None,
) -> int:
    """:func:`deliver`, awaitable: the store calls run in a worker thread, never blocking the
    running loop; the same options, result and errors.

    ``async def`` handlers are awaited on the running loop, in order, one payload at a time;
    plain handlers run in the worker thread, so a slow or blocking one (most existing handlers
    do blocking I/O) stalls only that thread. A reliable delivery holds its lock while the
    handlers run: a handler still awaited when the lease runs out may see its payload again.
    """
    return await in_worker(
        deliver,
        mapping,
        reliable,
        lease=lease,
        max_attempts=max_attempts,
        retry_delay=retry_delay,
        retry_backoff=retry_backoff,
        retry_max_delay=retry_max_delay,
        limit=limit,
    )


def _deliver(
    signals: SignalMapping,
    reliable: bool | None,
    lease: int | None,
    max_attempts: int | None,
    override: RetryOverride,
    limit: int | None,
) -> int:
    settings = get_settings()
    specs = signals.specs(registry)
    weak = [
        name for name in signals if not (specs[name].reliable if reliable is None else reliable)
    ]
    weak_set = set(weak)
    retry = signals.retry.under(override)
    groups: dict[tuple[int, int, RetryPolicy], list[str]] = {}
    for name in signals:
        if name in weak_set:
            continue
        spec = specs[name]
        group = (
            check_lease(_first(lease, signals.lease, spec.lease)),
            check_max_attempts(_first(max_attempts, signals.max_attempts, spec.max_attempts)),
            retry.policy(spec),
        )
        groups.setdefault(group, []).append(name)
    delivered = 0
    if weak:
        part = signals.subset(weak) if groups else signals
        delivered += deliver_weak(part, settings, specs, limit)
    for (group_lease, group_attempts, policy), names in groups.items():
        part = signals.subset(names) if weak or len(groups) > 1 else signals
        delivered += deliver_reliable(
            part, settings, specs, group_lease, group_attempts, policy, limit=limit
        )
    return delivered


def _first(*values: int | None) -> int:
    return next(value for value in values if value is not None)


__all__ = [
    "DeadLetter",
    "Handler",
    "HandlerSpec",
    "MappingArg",
    "SignalMapping",
    "adeliver",
    "check_limit",
    "dead_letter_details",
    "dead_letters",
    "deliver",
    "pass_signal_name",
    "purge_dead_letters",
    "requeue_dead_letters",
]

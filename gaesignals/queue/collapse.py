"""What a take does with cancellations, coalesce keys and debounce: one pure function.

A take (weak or reliable, generic or native) reads every queue key of a signal, splits what is
due from what waits on a delay, then hands the signal's keys to :func:`collapse` when any of
them holds a cancellation or a coalesced payload (never otherwise: a delivery with neither pays
nothing for it). The rules, across every key of the signal read in the take:

- A cancellation drops the due payload it names (``cancelled``), whichever key holds it. One
  whose payload waits on a delay stays queued with it, for the take that finds it due; one
  whose payload is gone (delivered, unknown) is dropped with the take and counts nothing.
- Of the payloads of one coalesce key (cancelled ones aside), the newest (by the send time in
  its metadata; then the take's key order and queue order) is the one delivered; the others
  due are ``coalesced``. When the newest still waits on its own delay, it wins when it is due:
  the older due ones are coalesced now. Older ones waiting on a later delay of their own keep
  it (a delay is a promise to the sender of that payload), but for a reliable payload waiting
  for a retry (``retries``): a newer one of its key delivered now supersedes it (``coalesced``,
  removed: its retry would only deliver older news after newer).
- Debounce (read from the newest's metadata): the run is due once the newest is ``debounce``
  old, or once the oldest due payload of the run is ``debounce_max`` old. A run not due keeps
  its newest and its oldest queued (the oldest carries the run's start), the others between
  them are coalesced now.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from .. import frames


class Collapsed(NamedTuple):
    """What :func:`collapse` decided for one signal, key by key."""

    #: The due payloads to hand to the handlers, in queue order.
    deliver: dict[str, list[frames.Frame]]
    #: Frames read as due that stay queued: a debounced run's newest and oldest, and the
    #: cancellations of payloads that wait on a delay; in queue order.
    stay: dict[str, list[frames.Frame]]
    #: Payloads waiting for a retry that a newer one superseded (with ``retries`` only).
    retired: dict[str, list[frames.Frame]]
    coalesced: Counter[str]
    cancelled: Counter[str]


class _Member(NamedTuple):
    """One payload of a coalesce run, ordered oldest first."""

    sent_ms: int
    key_order: int
    start: int
    due: bool
    key: str
    frame: frames.Frame
    run: frames.Coalesce


def collapse(
    due: Mapping[str, Sequence[frames.Frame]],
    waiting: Mapping[str, Sequence[frames.Frame]],
    cancels: Mapping[str, Sequence[frames.Frame]],
    now: int,
    *,
    retries: bool = False,
) -> Collapsed:
    """Decide what of one signal's ``due`` payloads (by key, in the take's key order) reach
    the handlers at ``now`` (Unix ms), given its payloads ``waiting`` on a delay and its
    cancellations (see the module docstring)."""
    cancelled_ids = {frame.body for found in cancels.values() for frame in found}
    result = Collapsed({}, {key: [] for key in due}, {}, Counter(), Counter())
    runs: dict[bytes, list[_Member]] = {}
    for order, (key, found) in enumerate(due.items()):
        kept = []
        for frame in found:
            if frame.ident in cancelled_ids:
                result.cancelled[key] += 1
                continue
            kept.append(frame)
            run = frames.coalesce_of(frame) if frame.meta else None
            if run is not None:
                member = _Member(run.sent_ms, order, frame.start, True, key, frame, run)
                runs.setdefault(run.key, []).append(member)
        result.deliver[key] = kept
    waiting_ids = _add_waiting(runs, waiting, cancelled_ids, len(due))
    for key, found in cancels.items():
        result.stay.setdefault(key, []).extend(f for f in found if f.body in waiting_ids)
    removed: set[tuple[str, int]] = set()
    for members in runs.values():
        _settle_run(sorted(members), now, result, removed, retries)
    if removed:
        for key, kept in result.deliver.items():
            result.deliver[key] = [f for f in kept if (key, f.start) not in removed]
    for staying in result.stay.values():
        staying.sort(key=lambda frame: frame.start)
    return result


def _add_waiting(
    runs: dict[bytes, list[_Member]],
    waiting: Mapping[str, Sequence[frames.Frame]],
    cancelled_ids: set[bytes],
    orders: int,
) -> set[bytes]:
    """Add the coalesced payloads waiting on a delay to their runs; return every waiting id."""
    ids = set()
    for order, (key, found) in enumerate(waiting.items(), start=orders):
        for frame in found:
            ids.add(frame.ident)
            run = frames.coalesce_of(frame) if frame.meta else None
            if run is not None and frame.ident not in cancelled_ids:
                member = _Member(run.sent_ms, order, frame.start, False, key, frame, run)
                runs.setdefault(run.key, []).append(member)
    return ids


def _settle_run(
    members: list[_Member],
    now: int,
    result: Collapsed,
    removed: set[tuple[str, int]],
    retries: bool,
) -> None:
    """One coalesce key's payloads, oldest first: mark the superseded ones coalesced, keep a
    debounced run that is not due yet."""
    newest = members[-1]
    older = [member for member in members[:-1] if member.due]
    staying: list[_Member] = []
    if newest.due and newest.run.debounce_ms:
        first = older[0] if older else newest
        if _due_at(first.sent_ms, newest.run) > now:
            staying = [newest] if first is newest else [first, newest]
            older = older[1:]
    for member in older:
        result.coalesced[member.key] += 1
        removed.add((member.key, member.start))
    for member in staying:
        result.stay[member.key].append(member.frame)
        removed.add((member.key, member.start))
    if retries and newest.due and not staying:
        for member in members[:-1]:
            if not member.due and member.frame.attempts:
                result.coalesced[member.key] += 1
                result.retired.setdefault(member.key, []).append(member.frame)


def _due_at(first_sent_ms: int, newest: frames.Coalesce) -> int:
    """When a debounced run whose first payload was sent at ``first_sent_ms`` is due."""
    at = newest.sent_ms + newest.debounce_ms
    if newest.debounce_max_ms:
        at = min(at, first_sent_ms + newest.debounce_max_ms)
    return at


def debounced(found: Iterable[frames.Frame], now: int) -> int:
    """How many of a signal's payloads (``found``: read from all its shards) wait behind a
    debounce at ``now`` (Unix ms): those of the runs whose newest is debounced and not due,
    as inspection reports them."""
    runs: dict[bytes, list[frames.Coalesce]] = {}
    for frame in found:
        run = frames.coalesce_of(frame) if frame.meta else None
        if run is not None:
            runs.setdefault(run.key, []).append(run)
    waiting = 0
    for members in runs.values():
        newest = max(members, key=lambda run: run.sent_ms)
        first = min(run.sent_ms for run in members)
        if newest.debounce_ms and _due_at(first, newest) > now:
            waiting += len(members)
    return waiting

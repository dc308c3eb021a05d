"""Which shard a thread sends a sharded signal to.

A signal declared with ``shards=N``, or spread over N shards by its senders
(:mod:`.spread`), has N queue keys (:func:`~gaesignals.keys.shard_queues`).
Each thread sends such a signal to one shard of its own (a process's threads take consecutive
shards from a random start), so its payloads stay in order there. It moves to a random other
shard when its shard is full, or (on stores without append) when it lost a CAS there to another
sender, and to the next shard once its shard has grown past :data:`SHARD_ROLL_BYTES`. Frames are
signed for the signal, not the shard, so a payload may sit on any shard of its signal and on no
other signal's key.
"""

from __future__ import annotations

import itertools
import os
import random
import threading
from collections.abc import Sequence

from ..config import Settings
from ..keys import SignalKeys, check_name, shard_queues, signal_keys
from ..registration import registry
from .spread import swept, width

#: A thread moves to another shard of a sharded signal once its shard holds this many bytes (on
#: stores with append: once it has appended this many since it picked the shard), so that one
#: sender's backlog spreads over every shard.
SHARD_ROLL_BYTES = 64 * 1024


class _Sticky(threading.local):
    """This thread's shard of each sharded signal (by the signal's own queue key), and how many
    bytes it knows that shard holds."""

    def __init__(self) -> None:
        self.shard: dict[str, int] = {}
        self.filled: dict[str, int] = {}
        #: How many shards the signal had when this thread picked (a wider one: pick again).
        self.span: dict[str, int] = {}


_sticky = _Sticky()
# Shard choices only need to differ between senders: a private generator, reseeded in a forked
# child (whose sticky shards are forgotten, or every forked worker would share its parent's).
rng = random.Random()
# A process's threads take consecutive shards from a random start: no two of its first N
# threads share a shard of an N-shard signal, and other processes start elsewhere at random.
_start = rng.getrandbits(16)
_picks = itertools.count()


def _after_fork() -> None:
    global _sticky, _start, _picks
    _sticky = _Sticky()
    rng.seed()
    _start = rng.getrandbits(16)
    _picks = itertools.count()


os.register_at_fork(after_in_child=_after_fork)


def route(name: str, keys: SignalKeys, settings: Settings) -> tuple[str, tuple[str, ...]]:
    """The queue key this thread sends ``name`` to, and all its queue keys when it has
    several shards (else an empty tuple)."""
    shards = width(settings, keys.queue, registry.shards(name))
    if shards == 1:
        return keys.queue, ()
    queues = shard_queues(keys.queue, shards)
    return pick(queues), queues


def pick(queues: tuple[str, ...]) -> str:
    """This thread's shard among a signal's queue keys, chosen the first time (and again
    when the signal has spread wider since): the process's next shard after its start."""
    base = queues[0]
    index = _sticky.shard.get(base)
    if index is None or _sticky.span.get(base) != len(queues):
        index = _sticky.shard[base] = (_start + next(_picks)) % len(queues)
        _sticky.span[base] = len(queues)
    return queues[index]


def stick(queues: Sequence[str], key: str) -> None:
    _sticky.shard[queues[0]] = queues.index(key)
    _sticky.span[queues[0]] = len(queues)
    _sticky.filled[queues[0]] = 0


def crowded(queues: Sequence[str], key: str) -> None:
    """Another sender writes this thread's shard too: send the next payloads to a random other
    one (the current payload is retried where it is, with the value just read)."""
    if len(queues) > 1 and _sticky.shard.get(queues[0]) == queues.index(key):
        stick(queues, rng.choice([q for q in queues if q != key]))


def filled(queues: Sequence[str], key: str, size: int, *, added: bool) -> None:
    """Note that ``key`` now holds ``size`` bytes (``added``: ``size`` more bytes); past
    :data:`SHARD_ROLL_BYTES` this thread moves to another shard for its next sends."""
    base = queues[0]
    if _sticky.shard.get(base) != queues.index(key):
        return  # another call of this thread moved meanwhile
    total = _sticky.filled.get(base, 0) + size if added else size
    if total <= SHARD_ROLL_BYTES:
        _sticky.filled[base] = total
    else:
        # The next shard round: one sender's backlog then fills the shards evenly.
        stick(queues, queues[(queues.index(key) + 1) % len(queues)])


def queues_of(name: str, settings: Settings, *, every: bool = False) -> list[str]:
    """Every queue key of ``name`` as declared or learned (``every``: the keys a sweep reads,
    :func:`~.spread.swept`): one per shard, its own first."""
    keys = signal_keys(check_name(name), settings.namespace)
    shards = (swept if every else width)(settings, keys.queue, registry.shards(name))
    return list(shard_queues(keys.queue, shards))

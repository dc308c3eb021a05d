"""The :class:`~gaesignals.stores.Connection` protocol over Redis commands.

What Redis does atomically is used as it is (``SET NX EX`` for add and locks, ``SET`` for the
cursor, ``DEL``); the rest are the scripts of :mod:`._scripts`. Redis has no CAS counter, so a
token is the value read itself, and a compare-and-set writes only if the key still holds a value
with the same SHA-1.

Why a value token cannot lose a payload (the ABA question): every caller computes the value it
writes from the value it read alone (the queue minus the frames it took, the same lock with a
fresh lease, a released lock). If the key holds byte-identical bytes at write time, the write
has exactly the effect it would have had right after a fresh read, so whatever happened in
between left nothing that the write could wipe: every frame a sender added since is in the
current value, which would then differ. Frames carry random 8-byte ids, so a queue can come back
to identical bytes only by a replay of the very same frames, and then the worst case is a
payload delivered twice, never one lost. A digest rather than the value keeps a CAS of a 1 MB
queue from sending 1 MB back. Weak delivery and reliable acknowledgement do not use it: they
are native (:mod:`._native`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from ...exceptions import PartialFailure, StoreUnavailable
from .. import Cached
from ._router import Command, Router
from ._scripts import APPEND, CAS, INCR, script


class _Token:
    """The value a key held when read; its digest is what a CAS compares."""

    __slots__ = ("value",)

    def __init__(self, value: bytes) -> None:
        self.value = value

    def digest(self) -> str:
        return hashlib.sha1(self.value).hexdigest()


# What a connection method answers, built from (key, reply) pairs.
_Answer = TypeVar("_Answer", bound=dict[str, Any])


class RedisConnection:
    """Sends each batch as one pipeline per server; tokens are values, valid anywhere."""

    def __init__(self, router: Router, max_value_size: int) -> None:
        self.router = router
        self.max_value_size = max_value_size

    def __enter__(self) -> RedisConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    # -- the Connection protocol: one private helper per command family ------------------------

    def gets_many(self, keys: Sequence[str]) -> dict[str, Cached]:
        return self._run([(key, ("GET", key)) for key in keys], _found)

    scan_many = gets_many  # a key has one home in a Redis cluster: nothing is ever stranded

    def cas_many(
        self,
        items: Mapping[str, Cached],
        expire: int = 0,
        counters: Mapping[str, int] | None = None,
    ) -> dict[str, bool]:
        """Compare-and-set by value digest; ``counters`` are bumped first: in the same pipeline
        on one node (which runs it in order), in a round trip of their own on a cluster."""
        bumps = [_incr(k, delta) for k, delta in (counters or {}).items() if k not in items]
        if bumps and self.router.clustered:
            try:
                self.router.execute(bumps)
            except PartialFailure as error:  # nothing was written yet: not a partial write
                raise StoreUnavailable(str(error)) from error.__cause__
            bumps = []
        limit = self.max_value_size
        commands: dict[str, Command] = {}
        for key, (value, token) in items.items():
            # Never grow a key past the limit; rewriting or shrinking one that is already over
            # it (written with a larger limit) stays possible, so it can still be drained.
            if isinstance(token, _Token) and (
                len(value) <= limit or len(value) <= len(token.value)
            ):
                commands[key] = (key, script(CAS, (key,), token.digest(), value, max(expire, 0)))
        return self._flags(items, commands, first=bumps)

    def add_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        return self._set(items, expire, ("NX",))

    def set_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        return self._set(items, expire, ())

    def append_many(
        self, items: Mapping[str, bytes], counters: Mapping[str, int] | None = None
    ) -> dict[str, bool]:
        """Append within ``max_value_size``, creating missing keys; ``counters`` (keys other than
        ``items``') are bumped as by :meth:`incr_many` in the same round trip, after the
        appends, whatever their outcome."""
        limit = self.max_value_size
        commands = {
            key: (key, script(APPEND, (key,), value, limit))
            for key, value in items.items()
            if len(value) <= limit
        }
        bumps = [_incr(k, delta) for k, delta in (counters or {}).items() if k not in items]
        return self._flags(items, commands, bumps)

    def incr_many(self, deltas: Mapping[str, int]) -> None:
        """Add each delta to a decimal counter (stopping at 0), creating a missing one."""
        self._run([_incr(key, delta) for key, delta in deltas.items()], _nothing)

    def delete_many(self, keys: Sequence[str]) -> None:
        self._run([(key, ("DEL", key)) for key in keys], _nothing)

    # -- helpers -------------------------------------------------------------------------------

    def _set(
        self, items: Mapping[str, bytes], expire: int, flags: tuple[str, ...]
    ) -> dict[str, bool]:
        ttl = ("EX", expire) if expire > 0 else ()
        commands = {
            key: (key, ("SET", key, value, *flags, *ttl))
            for key, value in items.items()
            if len(value) <= self.max_value_size
        }
        return self._flags(items, commands)

    def _flags(
        self,
        items: Mapping[str, object],
        commands: dict[str, Command],
        then: Sequence[Command] = (),
        first: Sequence[Command] = (),
    ) -> dict[str, bool]:
        """Run ``commands`` (after ``first`` and before ``then``, whose replies are not wanted)
        and answer for every key of ``items``: False where no command was sent (refused before
        the server saw it) or where it answered nil or 0. A key whose node failed is left out
        of a :class:`PartialFailure`'s results: its command may or may not have been applied."""

        def flags(pairs: Iterable[tuple[str, Any]]) -> dict[str, bool]:
            # Counters' keys are never keys of ``items``, so their replies are never taken.
            replies = dict(pairs)
            return {
                key: bool(replies.get(key))
                for key in items
                if key in replies or key not in commands
            }

        return self._run([*first, *commands.values(), *then], flags)

    def _run(
        self,
        commands: Sequence[Command],
        answer: Callable[[Iterable[tuple[str, Any]]], _Answer],
    ) -> _Answer:
        """Execute ``commands`` and build the method's answer from their (key, reply) pairs;
        when some nodes of a cluster failed, :class:`PartialFailure` carries the answer built
        from the replies that came, keyed as the method answers."""
        try:
            replies = self.router.execute(commands)
        except PartialFailure as error:
            raise PartialFailure(str(error), answer(error.results.items())) from error.__cause__
        return answer(zip((key for key, _ in commands), replies, strict=True))


def _found(pairs: Iterable[tuple[str, Any]]) -> dict[str, Cached]:
    """``gets_many``'s answer: the keys that hold a value, with the value as its token."""
    return {key: Cached(value, _Token(value)) for key, value in pairs if value is not None}


def _nothing(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """The answer of a call whose replies are not wanted (a partial failure carries none)."""
    return {}


def _incr(key: str, delta: int) -> Command:
    return (key, script(INCR, (key,), delta))

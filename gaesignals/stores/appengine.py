"""App Engine's bundled memcache, through ``appengine-python-standard``.

Three rules of that API shape this adapter:

* a ``memcache.Client`` keeps the CAS ids of what it read inside itself, so each
  :meth:`AppEngineStore.connection` gets a client of its own, used by one thread for one unit
  of work, and the ids it read are put back explicitly before each CAS;
* ``namespace=None`` means "the current request's namespace", so every call names ours;
* the client unpickles values stored with its pickle flag: ours is given an unpickler that
  refuses, so a pickled value planted by another service of the app never executes. Such a
  value reads as bytes that no frame parser accepts, and is dropped like any garbage.

App Engine has no atomic append, so a send issues an ``add`` and a ``gets`` together (one round
trip, which stores the frame when the queue key is missing) and, when the key existed, a ``cas``
(a second). A long queue is kept in segments (:mod:`gaesignals.stores.segments`): any ``cas``
that would leave more than a segment's worth of frames in a queue key writes them to a segment
first, reads join the segments back, and a ``cas`` that replaced a joined value deletes its
segments.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from .._extras import requires
from ..exceptions import StoreUnavailable
from . import DEFAULT_MAX_VALUE_SIZE, Cached, segments

#: How many times a read of a segmented queue is made again after racing a delivery.
_JOIN_ROUNDS = 3

#: What a value App Engine would have unpickled (or decoded to a non-bytes type) reads as.
FOREIGN_VALUE = b"\x00gaesignals: foreign value, not raw bytes\x00"


def _bytes_or_none(value: object) -> bytes | None:
    """A segment as read: bytes, or None when it is missing or not bytes (a planted pickle)."""
    return value if isinstance(value, bytes) else None


class _Joined:
    """The CAS id of a queue kept in segments, with what its value was joined from: the
    pointers (``head``), the segments' keys and their bytes (``front``)."""

    __slots__ = ("cas_id", "front", "head", "segments")

    def __init__(self, cas_id: object, head: bytes, names: list[str], front: bytes) -> None:
        self.cas_id = cas_id
        self.head = head
        self.segments = names
        self.front = front


class _Refused:
    """Stands in for whatever a pickled value would have produced."""


class RefusingUnpickler:
    """An ``Unpickler`` replacement that reads nothing and runs nothing."""

    def __init__(self, file: io.BytesIO, *args: object, **kwargs: object) -> None:
        self.persistent_load = None

    def load(self) -> _Refused:
        return _Refused()


class _Connection:
    def __init__(self, store: AppEngineStore) -> None:
        memcache = store.memcache
        self._memcache = memcache
        self._client = memcache.Client(unpickler=RefusingUnpickler)
        self._ns = store.namespace
        self._max = store.max_value_size
        self._cas = memcache.MemcacheSetRequest.CAS

    # A class, not @contextmanager: it is entered on every send, where a generator costs more
    # than the rest of the enter and exit (see BENCHMARKS.md).
    def __enter__(self) -> _Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def _statuses(self, policy: Any, items: Mapping[str, bytes], expire: int) -> dict[str, bool]:
        fitting = {k: v for k, v in items.items() if len(v) <= self._max}
        result = {k: False for k in items if k not in fitting}
        if not fitting:
            return result
        rpc = self._client._set_multi_async_with_policy(
            policy, fitting, time=expire, namespace=self._ns
        )
        statuses = rpc.get_result()
        if statuses is None:
            raise StoreUnavailable("App Engine memcache did not answer a set")
        for key in fitting:
            status = statuses.get(key)
            if status == self._memcache.ERROR:
                raise StoreUnavailable(f"App Engine memcache failed to store {key!r}")
            result[key] = status == self._memcache.STORED
        return result

    def gets_many(self, keys: Sequence[str]) -> dict[str, Cached]:
        result = self._read(keys)
        for round_ in range(_JOIN_ROUNDS):
            spilled = [
                k
                for k, (value, _) in result.items()
                if value[:2] == segments.POINTER_MAGIC and segments.is_queue_key(k)
            ]
            if not spilled:
                break
            changed = self._join(result, spilled, recheck=round_ < _JOIN_ROUNDS - 1)
            if not changed:
                break
            again = self._read(changed)
            for key in changed:
                if key in again:
                    result[key] = again[key]
                else:
                    del result[key]
        return result

    def _read(self, keys: Sequence[str]) -> dict[str, Cached]:
        values = self._client.get_multi(list(keys), namespace=self._ns, for_cas=True)
        result: dict[str, Cached] = {}
        for key, value in values.items():
            token = self._client._cas_ids.get((self._ns, key.encode("utf-8")))
            if isinstance(value, int) and not isinstance(value, bool):
                value = b"%d" % value  # a counter made by offset_multi reads back as an int
            result[key] = Cached(value if isinstance(value, bytes) else FOREIGN_VALUE, token)
        return result

    def _join(self, result: dict[str, Cached], spilled: list[str], *, recheck: bool) -> list[str]:
        """Replace each spilled queue's value by its segments and frames (see .segments).

        A segment is deleted only after a cas replaced the value that pointed to it, so a
        segment missing while its queue key still holds the same value was evicted; the keys
        whose value changed meanwhile (the read raced a delivery) are returned, unjoined, to
        be read again (``recheck``; a short value would look like lost payloads)."""
        limit = segments.budget(self._max)
        layouts = {key: segments.plan(key, result[key].value, limit) for key in spilled}
        wanted = [name for names, _ in layouts.values() for name in names if name is not None]
        parts = self._client.get_multi(wanted, namespace=self._ns)
        missing = [
            k for k, (names, _) in layouts.items() if any(n and n not in parts for n in names)
        ]
        changed: list[str] = []
        if missing and recheck:
            now = self._client.get_multi(missing, namespace=self._ns)
            changed = [k for k in missing if now.get(k) != result[k].value]
        for key, (names, start) in layouts.items():
            if key in changed:
                continue
            value, token = result[key]
            read = [segments.REFUSED if n is None else _bytes_or_none(parts.get(n)) for n in names]
            front = segments.join(value[:start], start, read)
            joined = [n for n in names if n is not None]
            result[key] = Cached(
                front + value[start:], _Joined(token, value[:start], joined, front)
            )
        return changed

    def scan_many(self, keys: Sequence[str]) -> dict[str, Cached]:
        return self.gets_many(keys)  # App Engine shards its memcache itself

    def cas_many(
        self,
        items: Mapping[str, Cached],
        expire: int = 0,
        counters: Mapping[str, int] | None = None,
    ) -> dict[str, bool]:
        if counters:
            self.incr_many({k: v for k, v in counters.items() if k not in items})
        values = {}
        result = {}
        spent: dict[str, list[str]] = {}
        moved: dict[str, str] = {}
        fresh: dict[str, bytes] = {}
        for key, (value, token) in items.items():
            if token is None or len(value) > self._max:
                result[key] = False
                continue
            if isinstance(token, _Joined):
                if token.front and value.startswith(token.front):
                    # A send's gets + cas (the value read, then frames): the segments stay.
                    value = token.head + value[len(token.front) :]
                else:
                    spent[key] = token.segments
                token = token.cas_id
            move = _moved(key, value)
            if move is not None:  # the frames go to a segment written just before the cas
                value, name, fresh[name] = move
                moved[key] = name
            self._client._cas_ids[(self._ns, key.encode("utf-8"))] = token
            values[key] = value
        if fresh:
            added = self.add_many(fresh)
            for key, name in list(moved.items()):
                if not added[name]:  # the whole value in place after all
                    values[key], token = items[key]
                    if isinstance(token, _Joined):
                        spent[key] = token.segments
                    del moved[key]
        result.update(self._statuses(self._cas, values, expire))
        # Segments of the values just replaced hold nothing any reader will find again; those
        # made for a cas that failed were never pointed to.
        done = [name for key, names in spent.items() if result.get(key) for name in names]
        done += [name for key, name in moved.items() if not result.get(key)]
        if done:
            self._client.delete_multi(done, namespace=self._ns)
        return result

    def add_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        return self._statuses(self._memcache.MemcacheSetRequest.ADD, items, expire)

    def set_many(self, items: Mapping[str, bytes], expire: int = 0) -> dict[str, bool]:
        return self._statuses(self._memcache.MemcacheSetRequest.SET, items, expire)

    def append_many(
        self, items: Mapping[str, bytes], counters: Mapping[str, int] | None = None
    ) -> dict[str, bool]:
        raise NotImplementedError("App Engine memcache has no atomic append")

    def incr_many(self, deltas: Mapping[str, int]) -> None:
        if deltas:
            # initial_value=0 creates a missing counter; a value that is not one reads as None.
            self._client.offset_multi(dict(deltas), namespace=self._ns, initial_value=0)

    def delete_many(self, keys: Sequence[str]) -> None:
        if not self._client.delete_multi(list(keys), namespace=self._ns):
            raise StoreUnavailable("App Engine memcache did not answer a delete")


def _moved(key: str, value: bytes) -> tuple[bytes, str, bytes] | None:
    """When ``value`` (for the queue at ``key``) holds more than a segment's worth of frames
    after its pointers: the value with those frames replaced by a pointer to a new segment,
    that segment's key and its bytes (to write before the value). Else None."""
    if not segments.is_queue_key(key):
        return None  # only queues are kept in segments
    start = segments.pointers(value)[1]
    if len(value) - start <= segments.SEGMENT_BYTES:
        return None
    ident = segments.new_id()
    body = value[start:]
    return (
        value[:start] + segments.pointer(ident, len(body)),
        segments.segment_key(key, ident),
        body,
    )


class AppEngineStore:
    """Pending payloads in App Engine's memcache (or the testbed's memcache stub).

    ``namespace`` is the App Engine memcache namespace to use, always passed explicitly
    (``""`` is the default namespace, not the request's).
    """

    supports_append = False
    shared = True
    sizes = None
    native = None

    def __init__(
        self, *, namespace: str = "", max_value_size: int = DEFAULT_MAX_VALUE_SIZE
    ) -> None:
        with requires("appengine"):  # fail at construction, not at first send
            from google.appengine.api import memcache

        self.memcache: Any = memcache
        self.namespace = namespace
        self.max_value_size = min(max_value_size, memcache.MAX_VALUE_SIZE)
        self.fast_send: AppEngineStore | None = self

    def __repr__(self) -> str:
        return f"AppEngineStore(namespace={self.namespace!r})"

    def connection(self) -> _Connection:
        """A connection with a memcache client of its own (see the module docstring)."""
        return _Connection(self)

    def append_one(self, key: str, value: bytes, counter: str | None) -> bool | None:
        """One send in the fewest round trips: an ``add`` and a ``gets`` issued together (one
        round trip: the add stores the frame when the key is missing), then, when the key
        existed, a ``cas`` on what the gets read (two). True when stored; None when it stored
        nothing (the value would overflow, or the key changed under the cas), and the general
        path must run. ``counter`` is not touched: without append, sends count ``sent`` in
        batches (see :func:`gaesignals.accounting.count_sent`)."""
        memcache = self.memcache
        client = memcache.Client(unpickler=RefusingUnpickler)
        ns = self.namespace
        add = memcache.MemcacheSetRequest.ADD
        adding = client._set_multi_async_with_policy(add, {key: value}, namespace=ns)
        reading = client.get_multi_async([key], namespace=ns, for_cas=True)
        if _stored(memcache, adding.get_result(), key):
            return True  # the gets' answer is not needed: its RPC ends by itself
        current = reading.get_result().get(key)
        if not isinstance(current, bytes):
            return None  # gone again since the add, or not ours: the general path decides
        if segments.spilled_size(current) + len(value) > self.max_value_size:
            return None
        new = current + value
        segment = None
        move = _moved(key, new)
        if move is not None:
            # Past a segment's worth of frames: they move to a segment in this send's cas, so
            # the value a send rewrites stays small (see .segments).
            new, segment, body = move
            added = client._set_multi_async_with_policy(add, {segment: body}, namespace=ns)
            if not _stored(memcache, added.get_result(), segment):
                return None
        cas = memcache.MemcacheSetRequest.CAS
        swapped = client._set_multi_async_with_policy(cas, {key: new}, namespace=ns)
        if _stored(memcache, swapped.get_result(), key):
            return True
        if segment is not None:
            client.delete_multi([segment], namespace=ns)
        return None


def _stored(memcache: Any, statuses: dict[str, int] | None, key: str) -> bool:
    """Whether a set stored ``key``; an unanswered or failed set raises ``StoreUnavailable``
    (a send either stores its frame or raises)."""
    if statuses is None:
        raise StoreUnavailable("App Engine memcache did not answer a set")
    status = statuses.get(key)
    if status == memcache.ERROR:
        raise StoreUnavailable(f"App Engine memcache failed to store {key!r}")
    return bool(status == memcache.STORED)

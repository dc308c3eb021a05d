"""One server's part of the two batched writes that carry most of the protocol: a
compare-and-set of many queues (:class:`CasWrite`) and the appends of a send
(:class:`AppendWrite`). Each builds one pipelined request, sends it, and reads what it says."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence

from ...exceptions import StoreUnavailable
from .. import Cached, segments
from ._node import Node, Token
from ._sizes import Sizes
from ._wire import bump, check_memory, quiet_bumps, segment_flags, size_flags, wire_key

logger = logging.getLogger("gaesignals")


class CasWrite:
    """A cas of many keys on one server: meta commands in quiet mode (``ms <key> <size>
    C<cas> q``, ``ma ... q``, then ``mn``), the server answering only what failed; each
    command carries its index as an opaque token (``O<i>``), which is how a failure names its
    key. A value too large for ``ms`` goes as a classic ``cas`` after them."""

    def __init__(
        self,
        node: Node,
        items: Mapping[str, Cached],
        expire: int,
        result: dict[str, bool],
    ) -> None:
        self.node = node
        self.items = items
        self.expire = expire
        self.result = result
        #: The keys whose write went out, in the order of their commands.
        self.sent: list[str] = []
        #: The segments each value to be replaced was joined from (only values that had any).
        self.joined: dict[str, Sequence[bytes]] = {}
        #: (key, cas) of the values no segment could take, for a classic cas.
        self.classic: list[tuple[str, bytes]] = []
        #: The segments made for each key's new value.
        self.moved: dict[str, list[bytes]] = {}

    def run(self, keys: list[str], counts: Mapping[str, int], limit: int, sizes: Sizes) -> None:
        """Write ``keys`` (bumping ``counts`` ahead of them, in the same pipeline), then note
        the sizes written and delete the segments no value points to any more."""
        parts = [quiet_bumps(self.node.prefix, counts)] if counts else []
        parts += self.commands(keys, limit)
        if parts:
            failed = self.node.exchange_quiet(b"".join(parts))
            self.result.update(dict.fromkeys(self.sent, True))
            for index in failed:
                if index < len(self.sent):  # a token this batch did not send names nothing
                    self.result[self.sent[index]] = False
        if self.classic:
            self.send_classic()
        result, items = self.result, self.items
        # Inline, per key: the size written (items are indexed as pairs: a caller may pass
        # plain ``(value, token)`` tuples), for keys at home (a stranded copy's name has a
        # space, see is_stranded).
        sizes.note({k: len(items[k][0]) for k in self.sent if result[k] and " " not in k})
        self.delete_spent()

    def commands(self, keys: list[str], limit: int) -> list[bytes]:
        """The quiet ``ms`` of each key whose token this socket read; the others fail."""
        sock = self.node.socket()
        prefix = self.node.prefix
        ttl = b" T%d" % self.expire if self.expire else b""
        parts = []
        for key in keys:
            value, token = self.items[key]
            # A token from another socket may predate a restart: refuse, never compare.
            if not isinstance(token, Token) or token.sock is not sock:
                self.result[key] = False
                continue
            if token.segments:
                self.joined[key] = token.segments
            wire = key.encode("ascii") if " " not in key else wire_key(key)  # inline at home
            flags = b""
            if len(value) > segments.SEGMENT_BYTES and segments.is_queue_key(key):
                value, flags = self.shrink(key, wire, value)
            if len(value) > limit:
                # A value no segment could take: the server's own limit decides. Not with ms,
                # which on a value too large deletes the key.
                self.classic.append((key, token.cas))
                continue
            parts.append(
                b"ms %s%s %d C%s%s%s q O%d\r\n%s\r\n"
                % (prefix, wire, len(value), token.cas, ttl, flags, len(self.sent), value)
            )
            self.sent.append(key)
        return parts

    def shrink(self, key: str, wire: bytes, value: bytes) -> tuple[bytes, bytes]:
        """Keep the value the key holds small (see .segments): its frames go to new segments
        first, so an acknowledgement of a long queue (even one that overshot max_value_size)
        never meets the server's item limit. Returns the value to write and its flags."""
        start = segments.pointers(value)[1]
        if len(value) - start <= segments.SEGMENT_BYTES:
            return value, b""
        made = self.node.write_segments(wire, value, start)
        if made is None:
            return value, b""
        head, spilled, self.moved[key] = made
        return head, b" F%d" % segment_flags(spilled - len(head))

    def send_classic(self) -> None:
        """A classic ``cas`` of each value too large for ``ms``."""
        parts = []
        for key, cas in self.classic:
            value, _ = self.items[key]
            wire = self.node.prefix + wire_key(key)
            parts.append(
                b"cas %s 0 %d %d %s\r\n%s\r\n" % (wire, self.expire, len(value), cas, value)
            )
        request = b"".join(parts)
        replies = self.node.exchange(request, len(self.classic))
        for (key, _), reply in zip(self.classic, replies, strict=True):
            self.result[key] = reply == b"STORED"
            self.sent.append(key)

    def delete_spent(self) -> None:
        """Delete the segments of the values just replaced (no reader will find them again)
        and those made for a cas that failed (never pointed to)."""
        result = self.result
        spent = [name for key, names in self.joined.items() if result.get(key) for name in names]
        spent += [name for key, names in self.moved.items() if not result[key] for name in names]
        if spent:
            try:
                self.node.delete_segments(spent)
            except StoreUnavailable:  # the writes stand; the segments wait for eviction
                logger.warning("could not delete spent segments", exc_info=True)


class AppendWrite:
    """The appends of a batch, and its counters' bumps, one server at a time: an ``append``
    and ``mg <key> s f`` (the new size) per key, with an ``add`` after the append of a key
    never seen, all pipelined. Called once per server as the batch's operation."""

    def __init__(
        self,
        items: Mapping[str, bytes],
        counts: Mapping[str, int],
        sizes: Sizes,
        limit: int,
        result: dict[str, bool],
    ) -> None:
        self.items = items
        self.counts = counts
        self.sizes = sizes
        self.limit = limit
        self.result = result

    def __call__(self, node: Node, keys: list[str]) -> None:
        parts, sent, both = self.commands(node.prefix, keys)
        if sent:
            replies = node.exchange(b"".join(parts), len(sent))
            for key in self.settle(iter(replies), dict.fromkeys(sent), both):
                node.spill(key)
            check_memory(replies, self.items, self.result, node.server)

    def commands(self, prefix: bytes, keys: list[str]) -> tuple[list[bytes], list[str], set[str]]:
        """Each key's commands; the key once per reply it waits for; the keys whose
        ``append`` an ``add`` follows."""
        items, sizes, limit = self.items, self.sizes, self.limit
        parts: list[bytes] = []
        sent: list[str] = []
        both: set[str] = set()
        for key in keys:
            wire = prefix + wire_key(key)
            if key not in items:
                parts.append(bump(wire, self.counts[key]))
                sent.append(key)
                continue
            value = items[key]
            if len(value) + sizes.get(key, 0) > limit:
                self.result[key] = False  # the caller reads the key (refreshing its size)
                continue
            parts.append(b"append %s 0 0 %d\r\n%s\r\n" % (wire, len(value), value))
            sent.append(key)
            if key not in sizes:
                parts.append(b"add %s 0 0 %d\r\n%s\r\n" % (wire, len(value), value))
                sent.append(key)
                both.add(key)
            parts.append(b"mg %s s f\r\n" % wire)
            sent.append(key)
        return parts, sent, both

    def settle(
        self, replies: Iterator[bytes], keys: Mapping[str, None], both: set[str]
    ) -> list[str]:
        """Read each key's replies: whether it was stored, and its new size. Returns the keys
        whose append took them past a multiple of the segment size (to move to a segment)."""
        items, sizes, result = self.items, self.sizes, self.result
        full = []
        for key in keys:
            if key not in items:
                next(replies)  # a counter's bump
                continue
            stored = next(replies) == b"STORED"
            if key in both:
                stored = next(replies) == b"STORED" or stored
            result[key] = stored
            size = next(replies)
            if size.startswith(b"HD s"):
                here, spilled = size_flags(size)
                sizes[key] = here + spilled
                if stored and segments.crossed(here, len(items[key])):
                    full.append(key)
        return full

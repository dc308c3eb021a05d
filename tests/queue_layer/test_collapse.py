"""The rules of :func:`gaesignals.queue.collapse.collapse` (no store): which payloads a take
hands over, keeps or counts, and :func:`~gaesignals.queue.collapse.debounced`."""

from __future__ import annotations

from gaesignals import frames
from gaesignals.queue.collapse import collapse, debounced

SIGNAL = b"gs::q:{s}"
NOW = 1_800_000_000_000


def _frames(*specs: tuple[str, int, int, int]) -> list[frames.Frame]:
    """One value of frames, each (coalesce key, sent ms, debounce ms, attempts), parsed."""
    raw = b"".join(
        frames.encode(
            bytes((n,)),
            SIGNAL,
            ident=bytes(7) + bytes((n,)),
            meta=frames.coalesce_meta(key, sent_ms=sent, debounce_ms=debounce),
            attempts=attempts,
        )
        for n, (key, sent, debounce, attempts) in enumerate(specs)
    )
    return frames.parse_queue(raw, SIGNAL).found


def test_payloads_sent_in_one_millisecond_keep_the_last_in_queue_order() -> None:
    """Two payloads of a key with one send time: the one later in the queue is the newest."""
    found = _frames(("k", NOW, 0, 0), ("k", NOW, 0, 0))
    decided = collapse({"q": found}, {}, {}, NOW)
    assert decided.deliver["q"] == [found[1]] and decided.coalesced["q"] == 1


def test_the_newest_by_send_time_wins_whatever_the_key_order() -> None:
    """A newer payload in an earlier shard supersedes an older one in a later shard."""
    first, second = _frames(("k", NOW - 1, 0, 0)), _frames(("k", NOW - 9, 0, 0))
    decided = collapse({"q0": first, "q1": second}, {}, {}, NOW)
    assert decided.deliver == {"q0": first, "q1": []}
    assert dict(decided.coalesced) == {"q1": 1}


def test_a_retry_is_superseded_only_when_retries_are_asked() -> None:
    """A payload waiting for a retry (attempts > 0) is retired by a newer due one of its key
    with ``retries``; a weak take leaves a waiting payload to its own due time."""
    waiting, due = _frames(("k", NOW - 9, 0, 1)), _frames(("k", NOW - 1, 0, 0))
    reliable = collapse({"q": due}, {"q": waiting}, {}, NOW, retries=True)
    assert reliable.retired == {"q": waiting} and reliable.coalesced["q"] == 1
    weak = collapse({"q": due}, {"q": waiting}, {}, NOW)
    assert weak.retired == {} and weak.coalesced["q"] == 0 and weak.deliver["q"] == due


def test_debounced_counts_the_payloads_of_runs_not_due() -> None:
    """Inspection's count: every payload of a debounced run not due, none of a due one."""
    found = _frames(
        ("quiet", NOW - 5_000, 1_000, 0),
        ("busy", NOW - 800, 1_000, 0),
        ("busy", NOW - 500, 1_000, 0),
        ("plain", NOW - 10, 0, 0),
    )
    assert debounced(found, NOW) == 2
    assert debounced(found, NOW + 500) == 0

"""The queue operations behind shared reliable delivery, on every store: a lock per shard, let
go early and reported; a signal widened on purpose; frames moved to other shards; a width
learned from the spread key."""

from __future__ import annotations

import gaesignals
from gaesignals import declare, frames
from gaesignals.config import get_settings
from gaesignals.keys import shard_keys, shard_queues, signal_keys
from gaesignals.queue import spread
from gaesignals.queue import state as queue_state
from gaesignals.queue.lease import Holder, LockState, acquire, lock_value, most_notable
from gaesignals.queue.reliable import learn_widths, move, widen_to
from gaesignals.stores import Store

from ..conftest import RawAccess

KEYS = signal_keys("shared", "")
SHARDS = shard_keys(KEYS, 4)


def test_most_notable_lock_state_puts_problems_first() -> None:
    """A signal's lock state over its shards: foreign or overlong if any is, then held, then
    free."""
    assert most_notable([]) is LockState.FREE
    assert most_notable([LockState.FREE, LockState.HELD]) is LockState.HELD
    assert most_notable([LockState.HELD, LockState.OVERLONG]) is LockState.OVERLONG
    assert most_notable([LockState.OVERLONG, LockState.FOREIGN]) is LockState.FOREIGN


def test_each_shard_has_its_own_lock(store: Store) -> None:
    """Two deliverers hold different shards of one signal at once; shard 0's lock is the
    signal's own lock key."""
    assert SHARDS[0].lock == KEYS.lock
    locks = [shard.lock for shard in SHARDS]
    with store.connection() as conn:
        assert acquire(conn, locks[:2], b"a" * 32, 30) == set(locks[:2])
        assert acquire(conn, locks, b"b" * 32, 30) == set(locks[2:])


def test_a_holder_lets_go_of_shards_early(store: Store) -> None:
    """Locks let go of before a delivery ends are free for another deliverer at once; the
    others stay held, and are still renewed."""
    locks = [shard.lock for shard in SHARDS]
    with store.connection() as conn:
        holder = Holder(conn, b"a" * 32, 30, acquire(conn, locks, b"a" * 32, 30))
        holder.let_go(locks[1:])
        assert holder.held == {locks[0]}
        assert acquire(conn, locks, b"b" * 32, 30) == set(locks[1:])
        assert holder.still_holds(locks[0]) and not holder.still_holds(locks[1])


def test_read_states_reports_the_shards_locks(raw: RawAccess) -> None:
    """A report reads the lock of every shard it is told of and shows the most notable."""
    raw.set(SHARDS[2].lock, b"\xff not a lock")
    raw.set(SHARDS[1].lock, lock_value(b"ab" * 16, 30))
    with raw.store.connection() as conn:
        one = queue_state.read_states(conn, {"shared": KEYS}, [], (), {"shared": 30})
        two = queue_state.read_states(conn, {"shared": KEYS}, [], (), {"shared": 30}, {"shared": 2})
        four = queue_state.read_states(
            conn, {"shared": KEYS}, [], (), {"shared": 30}, {"shared": 4}
        )
    assert one["shared"].lock is LockState.FREE
    assert two["shared"].lock is LockState.HELD
    assert four["shared"].lock is LockState.FOREIGN


def test_widen_to_doubles_until_the_width_wanted(store: Store) -> None:
    """An undeclared signal widens by doubling until it has the shards wanted, marked for
    senders and deliverers; a declared one keeps its shards."""
    settings = get_settings()
    with store.connection() as conn:
        assert widen_to(conn, settings, (KEYS.queue,), 3) == shard_queues(KEYS.queue, 4)
        assert spread.width(settings, KEYS.queue, 1) == 4
        declare("kept", shards=2)
        kept = shard_queues(signal_keys("kept", "").queue, 2)
        assert widen_to(conn, settings, kept, 8) == kept


def test_move_appends_after_what_a_shard_holds(raw: RawAccess) -> None:
    """Moved frames land after what each shard already holds, in the order given, and the
    keys written are returned."""
    queues = [shard.queue for shard in SHARDS]
    signer = KEYS.queue.encode()
    sent = [frames.encode(b"%d" % i, signer, [], json_body=True) for i in range(4)]
    raw.set(queues[1], sent[0])
    with raw.store.connection() as conn:
        moved = move(conn, raw.store, {queues[1]: sent[1], queues[2]: sent[2] + sent[3]})
    assert moved == {queues[1], queues[2]}
    assert raw.get(queues[1]) == sent[0] + sent[1]
    assert raw.get(queues[2]) == sent[2] + sent[3]


def test_learn_widths_reads_the_spread_key(store: Store) -> None:
    """A process that never read a signal's shard 0 learns its width from its spread key."""
    with store.connection() as conn:
        widen_to(conn, get_settings(), (KEYS.queue,), 4)
    gaesignals.configure(store=store)  # new settings: nothing learned
    settings = get_settings()
    assert spread.width(settings, KEYS.queue, 1) == 1
    with store.connection() as conn:
        assert learn_widths(conn, settings, [KEYS.queue]) == {KEYS.queue}
        assert learn_widths(conn, settings, [KEYS.queue]) == set()
    assert spread.width(settings, KEYS.queue, 1) == 4

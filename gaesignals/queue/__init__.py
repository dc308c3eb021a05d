"""The queue operations, between the stores below and the sending and delivering sides above.

:mod:`.routing` picks a sharded signal's shard, :mod:`.append` writes frames (every send, dead
letters, requeues), :mod:`.lease` holds reliable delivery's locks, :mod:`.reliable` reads its
shards and reschedules a failed payload, :mod:`.progress` keeps its progress cursors,
:mod:`.take` removes what a reliable delivery finished, :mod:`.dead_letters` keeps, lists,
requeues and purges what failed too often, :mod:`.counters` bumps the counters, :mod:`.state`
reads what reports show and :mod:`.records` keeps the small records beside the queues
(dashboard sessions, task results).
Only this layer calls a store's operations (``tests/test_layering.py`` checks). Each operation
is one entry point written over the memcache primitives; a store that declares a native version
(:class:`~gaesignals.stores.NativeQueue`) has it used instead.
"""

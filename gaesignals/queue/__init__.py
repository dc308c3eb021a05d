"""The queue operations, between the stores below and the sending and delivering sides above.

:mod:`.routing` picks a sharded signal's shard, :mod:`.append` writes frames (every send, dead
letters, requeues), :mod:`.lease` holds reliable delivery's locks, :mod:`.take` removes what a
reliable delivery finished. Each operation is one entry point written over the memcache
primitives; a store that declares a native version (:class:`~gaesignals.stores.NativeQueue`)
has it used instead.
"""

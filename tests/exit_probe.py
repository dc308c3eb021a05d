"""Run by test_stats: App Engine sent counts still held at exit are written before the SDK's
thread pool stops; prints the counter as a later exit callback reads it."""

from __future__ import annotations

import threading

from google.appengine.ext import testbed

import gaesignals
from gaesignals.keys import signal_keys
from gaesignals.stores.appengine import AppEngineStore

bed = testbed.Testbed()
bed.activate()
bed.init_memcache_stub()

store = AppEngineStore()
gaesignals.configure(store=store)
key = signal_keys("exiting", "").counter("sent")


def report() -> None:
    with store.connection() as conn:
        print("sent at exit:", conn.gets_many([key]).get(key, (None,))[0], flush=True)


# Registered before the first send, so it runs after the library's flush (last registered,
# first run) and before the SDK's pool stops (registered when the SDK was imported).
threading._register_atexit(report)  # type: ignore[attr-defined]
gaesignals.send("exiting", 1)
gaesignals.send("exiting", 2)

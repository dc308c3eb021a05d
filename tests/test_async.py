"""Coroutine handlers and the awaitable API: ``async def`` handlers beside plain ones in
``deliver``, ``adeliver``, ``send_now`` and ``asend_now``; ``asend`` and ``Signal.asend``; the
running-loop rule. Each test drives its own loop with ``asyncio.run``."""

from __future__ import annotations

import asyncio
import functools
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import gaesignals
from gaesignals import (
    EventLoopRunning,
    GaeSignalsError,
    InvalidDelay,
    Signal,
    adeliver,
    asend,
    asend_now,
    deliver,
    frames,
    pending,
    send,
    send_now,
    stats,
)
from gaesignals.stores import Store
from gaesignals.stores.memory import MemoryStore

from .async_support import GatedStore, wait_for

START = 1_800_000_000.0
MODES = pytest.mark.parametrize("reliable", [False, True], ids=["weak", "reliable"])


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The library's clock (frame ids, what is due), set by the test."""
    now = [START]
    monkeypatch.setattr(frames, "clock", lambda: now[0])
    yield now


class Tracker:
    """Coroutine handlers noting when each payload starts and ends, on which loop and
    thread, and how many ran at once; each yields to its loop between start and end."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.loops: list[asyncio.AbstractEventLoop] = []
        self.active = 0
        self.most = 0

    async def __call__(self, data: Any) -> str:
        return await self.handle(data)

    async def handle(self, data: Any) -> str:
        self.active += 1
        self.most = max(self.most, self.active)
        self.events.append(("start", data))
        self.loops.append(asyncio.get_running_loop())
        await asyncio.sleep(0)  # another payload would start here if not awaited one by one
        await asyncio.sleep(0)
        self.events.append(("end", data))
        self.active -= 1
        return f"handled {data}"

    async def fail_on_bad(self, data: Any) -> None:
        await asyncio.sleep(0)
        if data == "bad" and ("failed", "bad") not in self.events:
            self.events.append(("failed", data))
            raise RuntimeError("coroutine handler failed")
        self.events.append(("ok", data))


def one_at_a_time(payloads: range | list[Any]) -> list[tuple[str, Any]]:
    return [event for n in payloads for event in (("start", n), ("end", n))]


def test_a_mapping_knows_its_coroutine_handlers() -> None:
    """``async def`` functions and methods, partials of them and objects with an ``async
    def __call__`` count as coroutine handlers; plain callables and classes do not."""
    tracker = Tracker()

    async def named(data: Any, signal_name: str) -> None:
        return None

    coroutines = [tracker.handle, tracker, functools.partial(named, signal_name="x")]
    plain = [print, Tracker, functools.partial(print, end="")]
    mapping = gaesignals.SignalMapping({"mixed": [*coroutines, *plain]})
    assert mapping.coroutine_handlers == tuple(coroutines)


@MODES
def test_deliver_awaits_coroutine_handlers_in_order_on_one_loop(
    store: Store, reliable: bool
) -> None:
    """The synchronous ``deliver`` awaits a coroutine handler once per payload, in send order,
    one payload at a time, all on one loop of its own that it closes before returning."""
    tracker = Tracker()
    for n in range(5):
        send("jobs", n)
    assert deliver({"jobs": tracker.handle}, reliable=reliable) == 5
    assert tracker.events == one_at_a_time(range(5)) and tracker.most == 1
    (loop,) = set(tracker.loops)
    assert loop.is_closed()
    assert pending("jobs")["jobs"].count == 0


@MODES
def test_adeliver_awaits_coroutine_handlers_on_the_callers_loop(
    store: Store, reliable: bool
) -> None:
    """``adeliver`` awaits coroutine handlers on the loop that awaits it, in order, one
    payload at a time, and returns how many payloads were delivered."""
    tracker = Tracker()
    for n in range(5):
        send("jobs", n)

    async def main() -> tuple[int, asyncio.AbstractEventLoop]:
        return await adeliver(
            {"jobs": tracker.handle}, reliable=reliable
        ), asyncio.get_running_loop()

    delivered, loop = asyncio.run(main())
    assert delivered == 5
    assert tracker.events == one_at_a_time(range(5)) and tracker.most == 1
    assert set(tracker.loops) == {loop}
    assert pending("jobs")["jobs"].count == 0


@MODES
def test_plain_and_coroutine_handlers_run_in_mapping_order(store: Store, reliable: bool) -> None:
    """Plain and coroutine handlers of one signal run in their mapping's order for each
    payload, in ``deliver`` and ``adeliver``; under ``adeliver`` plain handlers run in a
    worker thread, not on the loop's."""
    log: list[tuple[str, Any]] = []
    threads: list[int] = []

    async def first(data: Any) -> None:
        await asyncio.sleep(0)
        log.append(("first", data))

    def plain(data: Any) -> None:
        threads.append(threading.get_ident())
        log.append(("plain", data))

    async def last(data: Any) -> None:
        log.append(("last", data))

    mapping = gaesignals.SignalMapping({"mixed": [first, plain, last]})
    assert mapping.coroutine_handlers == (first, last)
    send("mixed", 1)
    send("mixed", 2)
    assert deliver(mapping, reliable=reliable) == 2
    send("mixed", 3)

    async def main() -> int:
        return await adeliver(mapping, reliable=reliable)

    assert asyncio.run(main()) == 1
    assert log == [(kind, n) for n in (1, 2, 3) for kind in ("first", "plain", "last")]
    assert threads[:2] == [threading.get_ident()] * 2 and threads[2] != threading.get_ident()


def test_a_coroutine_handler_can_ask_for_the_signal_name(memory: MemoryStore) -> None:
    """A coroutine handler marked with ``pass_signal_name`` is awaited with the name, in
    ``deliver`` and ``send_now`` alike."""
    got: list[tuple[Any, str]] = []

    @gaesignals.pass_signal_name
    async def named(data: Any, signal_name: str) -> None:
        got.append((data, signal_name))

    send("user_7_login", "deferred")
    assert deliver({"user_7_login": named}) == 1
    send_now("user_7_login", "now", {"user_7_login": named})
    assert got == [("deferred", "user_7_login"), ("now", "user_7_login")]


def test_a_failing_coroutine_handler_is_logged_and_counted(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """In weak delivery a coroutine handler's exception is logged with the handler and the
    signal, counted as a failure, and the payloads after it are still delivered."""
    tracker = Tracker()
    for data in ("bad", "good"):
        send("weakly", data)

    async def main() -> int:
        return await adeliver({"weakly": tracker.fail_on_bad})

    with caplog.at_level(logging.ERROR, logger="gaesignals"):
        assert asyncio.run(main()) == 1
    assert "coroutine handler failed" in caplog.text and "'weakly'" in caplog.text
    assert "fail_on_bad" in caplog.text
    assert tracker.events == [("failed", "bad"), ("ok", "good")]
    counters = stats("weakly")["weakly"]
    assert (counters["delivered"], counters["failed"], counters["lost"]) == (1, 1, 0)
    assert pending("weakly")["weakly"].count == 0  # weak: the failed payload is gone


def test_a_failing_coroutine_handler_is_retried_in_reliable_mode(
    store: Store, clock: list[float]
) -> None:
    """In reliable delivery a coroutine handler's failure keeps its payload for a retry after
    the backoff, through ``deliver`` then ``adeliver``, while the payload behind it goes."""
    gaesignals.declare("jobs", reliable=True, retry_delay=1)
    tracker = Tracker()
    send("jobs", "bad")
    send("jobs", "good")
    assert deliver({"jobs": tracker.fail_on_bad}) == 1
    assert pending("jobs")["jobs"].waiting == 1
    clock[0] += 1.2

    async def main() -> int:
        return await adeliver({"jobs": tracker.fail_on_bad})

    assert asyncio.run(main()) == 1
    assert tracker.events == [("failed", "bad"), ("ok", "good"), ("ok", "bad")]
    assert pending("jobs")["jobs"].count == 0


@MODES
def test_sync_deliver_in_a_running_loop_refuses_coroutine_handlers_and_loses_nothing(
    store: Store, reliable: bool
) -> None:
    """``deliver`` called inside a running loop with a coroutine handler raises
    EventLoopRunning before taking anything: the payload is still pending, and a later
    ``adeliver`` delivers it."""
    tracker = Tracker()
    send("jobs", "kept")

    async def main() -> int:
        with pytest.raises(EventLoopRunning) as raised:
            deliver({"jobs": tracker.handle}, reliable=reliable)
        error = raised.value
        assert isinstance(error, GaeSignalsError) and isinstance(error, RuntimeError)
        assert error.call == "deliver" and error.handlers == (tracker.handle,)
        assert "await adeliver()" in str(error)
        assert pending("jobs")["jobs"].count == 1
        return await adeliver({"jobs": tracker.handle}, reliable=reliable)

    assert asyncio.run(main()) == 1
    assert tracker.events == one_at_a_time(["kept"])


def test_sync_deliver_in_a_running_loop_still_runs_plain_handlers(memory: MemoryStore) -> None:
    """The running-loop rule is for coroutine handlers only: plain ones are delivered."""
    got: list[Any] = []
    send("plain", 1)

    async def main() -> int:
        return deliver({"plain": got.append})

    assert asyncio.run(main()) == 1 and got == [1]


def test_send_now_and_asend_now_await_coroutine_handlers(memory: MemoryStore) -> None:
    """``send_now`` and ``asend_now`` return every handler's result, a coroutine handler's
    once awaited; ``send_now`` inside a running loop refuses it before any handler runs."""
    tracker = Tracker()
    plain: list[Any] = []
    mapping = {"now": [tracker.handle, plain.append]}
    assert send_now("now", 1, mapping) == ["handled 1", None]

    async def main() -> list[object]:
        with pytest.raises(EventLoopRunning) as raised:
            send_now("now", 2, mapping)
        assert raised.value.call == "send_now" and "await asend_now()" in str(raised.value)
        return await asend_now("now", 3, mapping)

    assert asyncio.run(main()) == ["handled 3", None]
    assert tracker.events == one_at_a_time([1, 3]) and plain == [1, 3]
    assert pending("now")["now"].count == 0  # nothing is stored by either


def test_asend_and_signal_asend_store_for_later(store: Store, clock: list[float]) -> None:
    """``asend`` and ``Signal.asend`` store payloads as ``send`` does, ``delay`` and ``eta``
    included: the delayed ones wait for their time."""
    eta = datetime.fromtimestamp(START, UTC) + timedelta(seconds=20)

    async def main() -> None:
        await asend("later", "now")
        await asend("later", "in 10 s", delay=10)
        await Signal("later").asend("at the eta", eta=eta)
        await Signal("later").asend({"plain": "data"})

    asyncio.run(main())
    got: list[Any] = []
    assert deliver({"later": got.append}) == 2
    assert got == ["now", {"plain": "data"}]
    clock[0] += 10
    assert deliver({"later": got.append}) == 1
    clock[0] += 10
    assert deliver({"later": got.append}) == 1
    assert got[2:] == ["in 10 s", "at the eta"]


def test_asend_refuses_a_bad_delay_and_stores_nothing(memory: MemoryStore) -> None:
    """``asend`` and ``Signal.asend`` raise send's InvalidDelay for a negative delay, a naive
    eta or both given; nothing is stored."""
    naive = datetime(2030, 1, 1)

    async def main() -> None:
        with pytest.raises(InvalidDelay):
            await asend("bad", 1, delay=-1)
        with pytest.raises(InvalidDelay):
            await Signal("bad").asend(1, eta=naive)
        with pytest.raises(InvalidDelay):
            await Signal("bad").asend(1, delay=1, eta=datetime.now(UTC))

    asyncio.run(main())
    assert pending("bad")["bad"].count == 0


def test_asend_and_adeliver_leave_the_loop_free_while_the_store_is_slow() -> None:
    """While a store call of ``asend`` or ``adeliver`` is held, the loop goes on running
    other coroutines; each finishes once the store answers."""
    gated = GatedStore(MemoryStore())
    gaesignals.configure(store=gated)
    got: list[Any] = []

    async def held(call: Any) -> Any:
        gated.entered.clear()
        gated.release.clear()
        gated.gate()
        task = asyncio.ensure_future(call)
        assert await wait_for(gated.entered)  # the loop ran this while the store was held
        assert not task.done()
        gated.release.set()
        return await task

    async def main() -> int:
        await held(asend("slow", "payload"))
        return int(await held(adeliver({"slow": got.append})))

    assert asyncio.run(main()) == 1 and got == ["payload"]


def test_an_eager_asend_awaits_coroutine_receivers_on_the_loop(memory: MemoryStore) -> None:
    """In eager mode ``asend`` runs a coroutine receiver at once, on the sender's loop; a
    plain ``send`` from inside the loop is refused as ``send_now`` is."""
    gaesignals.configure(store=memory, eager=True)
    tracker = Tracker()
    gaesignals.connect("eager", tracker.handle)

    async def main() -> asyncio.AbstractEventLoop:
        with pytest.raises(EventLoopRunning):
            send("eager", "from the loop's thread")  # refused before any receiver runs
        await asend("eager", "at once")
        return asyncio.get_running_loop()

    loop = asyncio.run(main())
    assert tracker.events == one_at_a_time(["at once"]) and tracker.loops == [loop]


def test_asyncio_is_imported_only_for_a_coroutine_handler() -> None:
    """A WSGI app delivering plain handlers never imports asyncio (a cold start's cost); the
    first coroutine handler imports it and runs."""
    script = (
        "import sys\n"
        "import gaesignals\n"
        "gaesignals.configure(store='memory://')\n"
        "gaesignals.send('x', 1)\n"
        "assert gaesignals.deliver({'x': print}) == 1\n"
        "assert 'asyncio' not in sys.modules, 'imported'\n"
        "got = []\n"
        "async def handler(data):\n"
        "    got.append(data)\n"
        "gaesignals.send('x', 2)\n"
        "assert gaesignals.deliver({'x': handler}) == 1 and got == [2]\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip().endswith("ok"), done.stderr

"""Target 4: one hot signal against the same load spread over many signals.

16 sender processes send as fast as they can for a fixed time, each payload a unique
``(sender, seq)`` id, while one deliverer process loops a weak ``deliver``. "hot": all 16 send
to one signal nobody declared (it spreads itself over more keys when contended);
"sharded": all 16 send to one signal declared with ``shards=16``; "spread": sender i sends to
signal i of 16. After the senders stop, the deliverer drains what is left. Figures: the
aggregate delivered rate (payloads delivered / time from the start until the last one was
delivered), sends that raised (``QueueFull`` when a key holds ~1 MB, ``Contention`` when a
gets + cas kept losing; the caller is told, so these are not lost), payloads lost (sent
without an error, never delivered) and duplicated (delivered twice).

"flat out" (memcached): 8 processes send 10,000 payloads each, as fast as they can, to one
undeclared signal while 4 processes deliver it weakly: no send may raise, none be lost or
doubled.

On memcached every sender and the deliverer are processes, all on the benchmark CPU with
memcached (see common.py). On the App Engine testbed the stub lives inside one process, so
there the senders and the deliverer are threads of one process (GIL-bound: the rate says
little about App Engine itself; losses and duplicates still count).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common import (
    Memcached,
    Row,
    Samples,
    appengine_testbed,
    arguments,
    emit,
    prepare,
    print_table,
    quiet_library,
)

import gaesignals
from gaesignals.exceptions import Contention, QueueFull, StoreUnavailable

SENDERS = 16
SHARDS = 16
KINDS = ("hot", "sharded", "spread")
DRAIN_LIMIT = 2000  # bounded drain loop after the senders stop


@dataclass
class Outcome:
    sent: set[tuple[int, int]] = field(default_factory=set)
    refused: int = 0
    failed: int = 0
    delivered: list[tuple[int, int]] = field(default_factory=list)
    elapsed: float = 0.0
    rounds: int = 0
    contended: int = 0
    sender_cpu: float = 0.0
    deliverer_cpu: float = 0.0
    server_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.delivered) / self.elapsed if self.elapsed else 0.0

    @property
    def lost(self) -> int:
        return len(self.sent - set(self.delivered))

    @property
    def duplicated(self) -> int:
        return len(self.delivered) - len(set(self.delivered))

    @property
    def phantom(self) -> int:
        """Delivered ids whose send raised: stored although the caller was told it failed."""
        return len(set(self.delivered) - self.sent)


class _CountContention(logging.Handler):
    """Counts the library's "stayed contended" records, whatever their level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "contended" in record.getMessage():
            self.count += 1


def send_loop(index: int, name: str, duration: float) -> tuple[list[int], int, int]:
    sent: list[int] = []
    refused = failed = 0
    deadline = time.monotonic() + duration
    seq = 0
    while time.monotonic() < deadline:
        try:
            gaesignals.send(name, (index, seq))
            sent.append(seq)
        except (QueueFull, Contention):
            refused += 1
            time.sleep(0.001)
        except StoreUnavailable:
            failed += 1
            time.sleep(0.001)
        seq += 1
    return sent, refused, failed


def deliver_loop(
    names: list[str], stop: Callable[[], bool], limit: float
) -> tuple[list[tuple[int, int]], float, int, int]:
    """Weak delivery until ``stop()``, then drain; returns ids, seconds to the last delivery,
    delivery calls, and how many of them left a key contended."""
    got: list[tuple[int, int]] = []
    mapping = gaesignals.SignalMapping({name: got.append for name in names})
    counter = _CountContention()
    logger = logging.getLogger("gaesignals")
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)  # the records are counted here, not printed
    logger.propagate = False
    logger.addHandler(counter)
    start = last = time.monotonic()
    rounds = 0
    while not stop() and time.monotonic() - start < limit:
        rounds += 1
        if gaesignals.deliver(mapping):
            last = time.monotonic()
        else:
            time.sleep(0.0005)
    empty = 0
    for _ in range(DRAIN_LIMIT):
        rounds += 1
        if gaesignals.deliver(mapping):
            last = time.monotonic()
            empty = 0
        else:
            empty += 1
            if empty >= 3:
                break
            time.sleep(0.01)
    logger.removeHandler(counter)
    logger.setLevel(level)
    logger.propagate = propagate
    return got, last - start, rounds, counter.count


# -- memcached: processes -------------------------------------------------------------------------


def _sender_process(url: str, index: int, name: str, duration: float, ready: Any, go: Any,
                    out: Any) -> None:  # fmt: skip
    quiet_library()
    gaesignals.configure(store=url)
    gaesignals.send("bench_hot_warmup", 0)  # connect before the start
    ready.put(index)
    go.wait()
    cpu = time.process_time()
    result = send_loop(index, name, duration)
    out.put(("sender", index, *result, time.process_time() - cpu))


def _deliverer_process(url: str, names: list[str], duration: float, ready: Any, go: Any,
                       stop: Any, out: Any) -> None:  # fmt: skip
    quiet_library()
    gaesignals.configure(store=url)
    gaesignals.deliver({"bench_hot_warmup": lambda data: None})
    ready.put(-1)
    go.wait()
    cpu = time.process_time()
    result = deliver_loop(names, stop.is_set, duration + 60)
    out.put(("deliverer", *result, time.process_time() - cpu))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (0 where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def signal_names(kind: str) -> list[str]:
    """The signals of a scenario; the sharded one is declared here, before the fork, so every
    sender and the deliverer know its shards (as an app's modules would declare it)."""
    if kind == "spread":
        return [f"bench_spread_{i}" for i in range(SENDERS)]
    if kind == "sharded":
        gaesignals.declare("bench_sharded", shards=SHARDS)
        return ["bench_sharded"]
    return ["bench_hot"]


def run_processes(server: Memcached, kind: str, duration: float) -> Outcome:
    url = server.url
    server_pid = server.process.pid if server.process else 0
    ctx = mp.get_context("fork")
    ready, out = ctx.Queue(), ctx.Queue()
    go, stop = ctx.Event(), ctx.Event()
    names = signal_names(kind)
    hot = len(names) == 1
    senders = [
        ctx.Process(
            target=_sender_process,
            args=(url, i, names[0] if hot else names[i], duration, ready, go, out),
        )
        for i in range(SENDERS)
    ]
    deliverer = ctx.Process(
        target=_deliverer_process, args=(url, names, duration, ready, go, stop, out)
    )
    procs = [*senders, deliverer]
    outcome = Outcome()
    try:
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.get(timeout=60)
        server_cpu = cpu_seconds(server_pid)
        go.set()
        for _ in senders:
            _, index, seqs, refused, failed, cpu = out.get(timeout=duration + 60)
            outcome.sent.update((index, seq) for seq in seqs)
            outcome.refused += refused
            outcome.failed += failed
            outcome.sender_cpu += cpu
        stop.set()
        _, got, elapsed, rounds, contended, cpu = out.get(timeout=120)
        outcome.server_cpu = cpu_seconds(server_pid) - server_cpu
        outcome.deliverer_cpu = cpu
        outcome.delivered, outcome.elapsed = got, elapsed
        outcome.rounds, outcome.contended = rounds, contended
    finally:
        stop.set()
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join()
    return outcome


FLAT_SENDERS, FLAT_EACH, FLAT_DELIVERERS = 8, 10_000, 4


def _flat_sender(url: str, index: int, go: Any, out: Any) -> None:
    quiet_library()
    gaesignals.configure(store=url)
    go.wait()
    raised = 0
    for seq in range(FLAT_EACH):
        while True:
            try:
                gaesignals.send("bench_flat", (index, seq))
                break
            except (QueueFull, Contention):
                raised += 1
                time.sleep(0.001)
    out.put(("sender", index, raised))


def _flat_deliverer(url: str, go: Any, stop: Any, out: Any) -> None:
    quiet_library()
    gaesignals.configure(store=url)
    go.wait()
    got, _, _, _ = deliver_loop(["bench_flat"], stop.is_set, 120)
    out.put(("deliverer", got))


def flat_out(server: Memcached) -> list[Row]:
    """8 processes x 10,000 sends, flat out, to one undeclared signal; 4 weak deliverers."""
    ctx = mp.get_context("fork")
    out, go, stop = ctx.Queue(), ctx.Event(), ctx.Event()
    senders = [
        ctx.Process(target=_flat_sender, args=(server.url, i, go, out)) for i in range(FLAT_SENDERS)
    ]
    deliverers = [
        ctx.Process(target=_flat_deliverer, args=(server.url, go, stop, out))
        for _ in range(FLAT_DELIVERERS)
    ]
    for proc in senders + deliverers:
        proc.start()
    start = time.monotonic()
    go.set()
    raised = 0
    for _ in senders:
        raised += out.get(timeout=300)[2]
    sending = time.monotonic() - start
    stop.set()
    delivered: list[tuple[int, int]] = []
    for _ in deliverers:
        delivered += out.get(timeout=300)[1]
    for proc in senders + deliverers:
        proc.join(timeout=30)
    sent = FLAT_SENDERS * FLAT_EACH
    lost = sent - len(set(delivered))
    duplicated = len(delivered) - len(set(delivered))
    bench = "hot/memcached flat out"
    ok = raised == 0 and lost == 0 and duplicated == 0
    return [
        Row(bench, f"{FLAT_SENDERS} x {FLAT_EACH:,} sends, {FLAT_DELIVERERS} weak deliverers",
            f"{sent / sending:,.0f} sends/s", f"{sending:.1f} s"),
        Row(bench, "raised / lost / duplicated", f"{raised} / {lost} / {duplicated}", "", "",
            "0 / 0 / 0", "PASS" if ok else "MISS"),
    ]  # fmt: skip


# -- App Engine stub: threads ---------------------------------------------------------------------


def run_threads(kind: str, duration: float) -> Outcome:
    from google.appengine.api import memcache

    memcache.flush_all()
    names = signal_names(kind)
    hot = len(names) == 1
    outcome = Outcome()
    go, stop = threading.Event(), threading.Event()
    results: list[tuple[int, list[int], int, int]] = []
    lock = threading.Lock()

    def sender(index: int) -> None:
        go.wait()
        got = send_loop(index, names[0] if hot else names[index], duration)
        with lock:
            results.append((index, *got))

    delivered: list[Any] = []

    def deliverer() -> None:
        go.wait()
        delivered.append(deliver_loop(names, stop.is_set, duration + 60))

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(SENDERS)]
    threads.append(threading.Thread(target=deliverer))
    for thread in threads:
        thread.start()
    go.set()
    for thread in threads[:-1]:
        thread.join(timeout=duration + 60)
    stop.set()
    threads[-1].join(timeout=120)
    for index, seqs, refused, failed in results:
        outcome.sent.update((index, seq) for seq in seqs)
        outcome.refused += refused
        outcome.failed += failed
    got, elapsed, rounds, contended = delivered[0]
    outcome.delivered, outcome.elapsed = got, elapsed
    outcome.rounds, outcome.contended = rounds, contended
    return outcome


# -- report ---------------------------------------------------------------------------------------


def summarize(bench: str, runs: dict[str, list[Outcome]], hot_target: float) -> list[Row]:
    rows = []
    rates = {kind: Samples([o.rate for o in outs]) for kind, outs in runs.items()}
    for kind in KINDS:
        outs = runs[kind]
        totals = Counter()
        for o in outs:
            totals.update(
                sent=len(o.sent), refused=o.refused, failed=o.failed, lost=o.lost,
                duplicated=o.duplicated, phantom=o.phantom, contended=o.contended,
                delivered=len(o.delivered), rounds=o.rounds,
            )  # fmt: skip
        rows.append(
            Row(bench, f"{kind}: delivered/s", f"{rates[kind].median:,.0f}/s", "",
                f"({rates[kind].low:,.0f}-{rates[kind].high:,.0f})")
        )  # fmt: skip
        rows.append(
            Row(bench, f"{kind}: sent ok / raised (QueueFull, Contention) / failed, all runs",
                f"{totals['sent']:,} / {totals['refused']:,} / {totals['failed']:,}", "", "",
                "raised 0" if kind == "hot" else "",
                ("PASS" if totals["refused"] == 0 else "MISS") if kind == "hot" else "")
        )  # fmt: skip
        rows.append(
            Row(bench, f"{kind}: delivered / rounds / rounds that left contended keys",
                f"{totals['delivered']:,} / {totals['rounds']:,} / {totals['contended']:,}")
        )  # fmt: skip
        if any(o.sender_cpu for o in outs):
            per = [
                f"{1e6 * sum(getattr(o, part) for o in outs) / max(1, totals['delivered']):.1f}"
                for part in ("sender_cpu", "deliverer_cpu", "server_cpu")
            ]
            rows.append(
                Row(bench, f"{kind}: CPU per payload, senders / deliverer / memcached",
                    " / ".join(per) + " us")
            )  # fmt: skip
        bad = totals["lost"] + totals["duplicated"] + totals["phantom"]
        rows.append(
            Row(bench, f"{kind}: lost / duplicated / stored-but-raised",
                f"{totals['lost']} / {totals['duplicated']} / {totals['phantom']}", "", "",
                "0 / 0 / 0", "PASS" if bad == 0 else "MISS")
        )  # fmt: skip
    for kind, label, target in (
        ("hot", "hot (undeclared, spreads itself) rate / spread rate", hot_target),
        ("sharded", f"sharded ({SHARDS} shards) rate / spread rate", 0.8),
    ):
        ratio = Samples(
            [h.rate / s.rate for h, s in zip(runs[kind], runs["spread"], strict=True) if s.rate]
        )
        verdict = "PASS" if ratio.median >= target else "MISS"
        rows.append(
            Row(bench, label, f"{rates[kind].median:,.0f}/s",
                f"{rates['spread'].median:,.0f}/s spread",
                f"{ratio.median:.2f}x ({ratio.low:.2f}-{ratio.high:.2f})", f">= {target:.2f}x",
                verdict)
        )  # fmt: skip
    return rows


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    pinning = prepare()
    quiet_library()
    duration = 1.0 if args.quick else 2.0
    reps = max(1, min(args.reps, 2 if args.quick else 5))
    rows: list[Row] = []
    with Memcached() as server:
        runs: dict[str, list[Outcome]] = {kind: [] for kind in KINDS}
        for rep in range(reps):
            for kind in KINDS if rep % 2 == 0 else KINDS[::-1]:
                server.flush()
                runs[kind].append(run_processes(server, kind, duration))
        rows += summarize("hot/memcached", runs, 0.9)
        server.flush()
        rows += flat_out(server)
    with appengine_testbed():
        from gaesignals.stores.appengine import AppEngineStore

        gaesignals.configure(store=AppEngineStore())
        runs = {kind: [] for kind in KINDS}
        for rep in range(max(1, reps - 2)):
            for kind in KINDS if rep % 2 == 0 else KINDS[::-1]:
                runs[kind].append(run_threads(kind, duration))
        rows += summarize("hot/appengine-stub (threads)", runs, 0.8)
    notes = [
        pinning + "; all senders and the deliverer share that CPU",
        f"{SENDERS} senders for {duration:.0f} s per run, {reps} runs per scenario on memcached, "
        f"{max(1, reps - 2)} on the App Engine stub; rates are medians over runs, counts are "
        "totals over runs",
        "App Engine stub: 16 sender threads + 1 deliverer thread in one process (the stub is "
        "per process)",
    ]
    print_table("hot signal (target 4)", rows, notes)
    emit(args, rows)


if __name__ == "__main__":
    main()

"""Issue 28: deliverers share a backlog; 1, 2 and 4 deliverer processes on one signal.

A backlog of 2,000 payloads of one undeclared signal, each handler taking 5 ms (a sleep, as a
handler waiting on I/O: 10 s for one deliverer), is drained by 1, 2 and 4 deliverer processes
looping ``deliver(mapping, limit=N)``, weakly and reliably, on memcached and on Redis. The
issue's target: 4 processes finish in at most 0.4x the time of one. Figures: the drain (launch
to the last payload handled), the ratio of 2 and 4 processes against one, and how the payloads
were split between the processes. A ``deliver`` without ``limit`` runs without it (said below
the table): one take then holds the whole backlog.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence

from backlog_jobs.deliverer import limit_supported
from backlogs import Queue, Runs, Servers, drain, enqueue, gaesignals_queue, seconds, split_text
from common import quiet_library

PROCESSES = (1, 2, 4)
TARGET = 0.40  # 4 processes against one


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="runs of each case (3)")
    parser.add_argument("--payloads", type=int, default=2_000, help="the backlog (2,000)")
    parser.add_argument("--job-ms", type=float, default=5.0, help="each handler's sleep (5)")
    parser.add_argument("--limit", type=int, default=50, help="deliver(limit=N) (50; 0: none)")
    parser.add_argument("--timeout", type=float, default=60.0, help="longest drain, s (60)")
    parser.add_argument("--only", default="", help="cases whose name contains this")
    return parser.parse_args()


def measure(servers: Servers, queue: Queue, args: argparse.Namespace) -> dict[int, Runs]:
    """Each repetition drains with 1, 2 and 4 processes, the order reversed every other one."""
    results = {count: Runs() for count in PROCESSES}
    env = servers.env(args.job_ms / 1000)
    for rep in range(args.reps):
        for count in PROCESSES if rep % 2 == 0 else PROCESSES[::-1]:
            servers.flush()
            enqueued = enqueue(queue, args.payloads)
            done = drain(queue.workers(count), env, servers.log, enqueued.accepted, args.timeout)
            results[count].enqueued.append(enqueued)
            results[count].drains.append(done)
    return results


def row(name: str, results: dict[int, Runs], payloads: int) -> list[str]:
    one = results[1].drains
    cells = [name]
    for count in PROCESSES:
        runs = results[count]
        cut = "" if runs.done >= payloads else f" (cut, {runs.done} done)"
        cells.append(seconds(runs.drain_seconds) + cut)
    for count in PROCESSES[1:]:
        ratios = [a.seconds / b.seconds for a, b in zip(results[count].drains, one, strict=True)]
        median = results[count].drain_seconds / results[1].drain_seconds
        cells.append(f"{median:.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")
    median4 = results[4].drain_seconds / results[1].drain_seconds
    cells.append(f"<= {TARGET:.2f}x " + ("PASS" if median4 <= TARGET else "MISS"))
    cells.append(split_text(results[4].drains))
    return cells


def print_table(title: str, rows: Sequence[list[str]], notes: Sequence[str]) -> None:
    headers = ["case", "1 process", "2 processes", "4 processes", "2 vs 1", "4 vs 1"]
    headers += ["target", "split over 4 (each run)"]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    print(f"\n== {title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for cells in rows:
        print("  ".join(x.ljust(w) for x, w in zip(cells, widths, strict=True)).rstrip())
    for note in notes:
        print(f"   * {note}")


def main() -> None:
    args = arguments()
    quiet_library()
    rows = []
    with contextlib.ExitStack() as stack:
        servers = Servers(stack)
        for store, url in (("memcached", servers.memcached.url), ("Redis", servers.redis.url)):
            for reliable in (False, True):
                queue = gaesignals_queue(store, url, reliable, args.limit)
                if args.only in queue.name:
                    rows.append(row(queue.name, measure(servers, queue, args), args.payloads))
                    print("  ".join(rows[-1]), flush=True)
    if args.limit and limit_supported():
        how = f"deliver(mapping, limit={args.limit}) in a loop"
    elif args.limit:
        how = f"limit={args.limit} asked, but this gaesignals' deliver has no limit: ran without"
    else:
        how = "deliver(mapping) in a loop, no limit"
    notes = [
        f"{args.payloads:,} payloads of one undeclared signal, handlers of {args.job_ms:g} ms; "
        f"medians of {args.reps} runs, ratios per run in brackets",
        f"each deliverer: {how}; drains cut at {args.timeout:g} s",
        "2 cores shared with other processes; nothing pinned",
    ]
    print_table("deliverers sharing one signal's backlog", rows, notes)


if __name__ == "__main__":
    main()

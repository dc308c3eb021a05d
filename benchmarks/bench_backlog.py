"""Issue 28: the public task-queue benchmark's shape, gaesignals side by side with its peers.

steventen/python_queue_benchmark enqueues 20,000 jobs one call at a time, then times how long
workers take to finish them all. Here: 20,000 no-op jobs drained by 2 workers, and 2,000 jobs
whose handlers take 5 ms each (a sleep, as a handler waiting on I/O) drained by 2 workers (two
workers at best take 5 s for these; fewer jobs keep the run short). gaesignals sends to one
undeclared signal on memcached and on Redis, delivered weakly and reliably by 2 deliverer
processes (``deliver`` in a loop); huey, RQ, Dramatiq and Celery, where installed, run on a
Redis broker with 2 worker processes started by their own command lines. Servers are started
here on loopback ports and flushed before every run. Figures: the enqueue, the workers' start-up
(launch to the first job done), the drain (launch to the last job done, start-up included, as
the public benchmark counts it), jobs per second over the drain, the drain against gaesignals
on memcached (weak), and each run's split of the jobs between the workers.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from backlog_jobs.deliverer import limit_supported
from backlogs import (
    Queue,
    Runs,
    Servers,
    drain,
    enqueue,
    gaesignals_queue,
    peer_queues,
    print_runs,
)
from common import quiet_library

WORKERS = 2


@dataclass
class Scenario:
    title: str
    jobs: int
    job_seconds: float


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="runs of each queue (3)")
    parser.add_argument("--jobs", type=int, default=20_000, help="no-op jobs (20,000)")
    parser.add_argument("--slow-jobs", type=int, default=2_000, help="5 ms jobs (2,000)")
    parser.add_argument("--timeout", type=float, default=60.0, help="longest drain, s (60)")
    parser.add_argument("--limit", type=int, default=0, help="gaesignals deliver(limit=N)")
    parser.add_argument("--only", default="", help="queues whose name contains this")
    return parser.parse_args()


def queues(servers: Servers, limit: int, skipped: list[str]) -> list[Queue]:
    ours = [
        gaesignals_queue(store, url, reliable, limit)
        for store, url in (("memcached", servers.memcached.url), ("Redis", servers.redis.url))
        for reliable in (False, True)
    ]
    return ours + peer_queues(skipped)


def run(
    servers: Servers, chosen: Sequence[Queue], scenario: Scenario, args: argparse.Namespace
) -> dict[str, Runs]:
    """Each repetition runs every queue once, the order reversed on every other one."""
    results = {queue.name: Runs() for queue in chosen}
    for rep in range(args.reps):
        for queue in chosen if rep % 2 == 0 else chosen[::-1]:
            servers.flush()
            enqueued = enqueue(queue, scenario.jobs)
            env = servers.env(scenario.job_seconds)
            commands = queue.workers(WORKERS)
            done = drain(commands, env, servers.log, enqueued.accepted, args.timeout)
            results[queue.name].enqueued.append(enqueued)
            results[queue.name].drains.append(done)
    return results


def main() -> None:
    args = arguments()
    quiet_library()
    scenarios = [
        Scenario(f"{args.jobs:,} no-op jobs, {WORKERS} workers", args.jobs, 0.0),
        Scenario(f"{args.slow_jobs:,} jobs of 5 ms, {WORKERS} workers", args.slow_jobs, 0.005),
    ]
    skipped: list[str] = []
    with contextlib.ExitStack() as stack:
        servers = Servers(stack)
        chosen = [q for q in queues(servers, args.limit, skipped) if args.only in q.name]
        for scenario in scenarios:
            results = run(servers, chosen, scenario, args)
            refused = {
                name: runs.enqueued[0].refused
                for name, runs in results.items()
                if runs.enqueued[0].refused
            }
            notes = [
                f"medians of {args.reps} runs; each drain cut at {args.timeout:g} s ('cut')",
                "2 cores shared with other processes; nothing pinned",
                *(
                    f"{name}: {why}; the drain is of the jobs accepted"
                    for name, why in refused.items()
                ),
                limit_note(args.limit),
                *(f"skipped {s}" for s in skipped),
            ]
            reference = chosen[0].name if chosen else ""
            print_runs(scenario.title, results, reference, notes)


def limit_note(limit: int) -> str:
    if not limit:
        return "gaesignals deliverers: deliver(mapping) with its defaults"
    if limit_supported():
        return f"gaesignals deliverers: deliver(mapping, limit={limit})"
    return f"--limit {limit} asked, but this gaesignals' deliver has no limit: ran without"


if __name__ == "__main__":
    main()

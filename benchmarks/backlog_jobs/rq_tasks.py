"""RQ: the job as a function; its workers are ``rq worker-pool`` processes, each forking a
work horse per job (RQ's default worker), so a job records its horse's parent."""

from __future__ import annotations

import os

from redis import Redis
from rq import Queue

from . import job, redis_url

queue = Queue("bench_backlog", connection=Redis.from_url(redis_url()))


def load_test_job(number: int) -> None:
    job(number, worker=os.getppid())


def enqueue(number: int) -> None:
    queue.enqueue(load_test_job, number)


def command(workers: int) -> list[str]:
    pool = ["-m", "rq.cli", "worker-pool", "-n", str(workers), "-q", "--url", redis_url()]
    return [*pool, "bench_backlog"]

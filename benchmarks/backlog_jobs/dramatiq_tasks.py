"""Dramatiq (``RedisBroker``): the job as an actor; its workers are ``dramatiq`` processes of
one thread each."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from . import job, redis_url

dramatiq.set_broker(RedisBroker(url=redis_url()))


@dramatiq.actor(queue_name="bench_backlog")
def load_test_job(number: int) -> None:
    job(number)


def enqueue(number: int) -> None:
    load_test_job.send(number)


def command(workers: int) -> list[str]:
    return ["-m", "dramatiq", __name__, "-p", str(workers), "-t", "1"]

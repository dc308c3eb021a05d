"""huey (``RedisHuey``): the job as a task; its workers are ``huey_consumer`` processes."""

from __future__ import annotations

from huey import RedisHuey

from . import job, redis_url

huey = RedisHuey("bench_backlog", url=redis_url())


@huey.task()
def load_test_job(number: int) -> None:
    job(number)


def enqueue(number: int) -> None:
    load_test_job(number)


def command(workers: int) -> list[str]:
    """The public benchmark's consumer line (``-d 0.001 -C -q``) with processes."""
    consumer = ["-m", "huey.bin.huey_consumer", f"{__name__}.huey"]
    return [*consumer, "-k", "process", "-w", str(workers), "-d", "0.001", "-C", "-q"]

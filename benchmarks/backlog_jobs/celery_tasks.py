"""Celery (Redis broker, no result backend): the job as a task; its workers are the prefork
pool of one ``celery worker``."""

from __future__ import annotations

from celery import Celery

from . import job, redis_url

app = Celery("bench_backlog", broker=redis_url())


@app.task(name="bench_backlog.load_test_job")
def load_test_job(number: int) -> None:
    job(number)


def enqueue(number: int) -> None:
    load_test_job.delay(number)


def command(workers: int) -> list[str]:
    worker = ["-m", "celery", "-q", "-A", __name__, "worker", "--loglevel", "warning"]
    return [*worker, "-c", str(workers), "-P", "prefork"]

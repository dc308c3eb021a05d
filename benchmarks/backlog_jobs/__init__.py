"""The job every queue runs in the backlog benchmarks, and how the benchmark sees it done.

Each job (a gaesignals handler, a huey, RQ, Dramatiq or Celery task) sleeps the configured
time, then writes one fixed-size record, its worker's pid and the time, to a file the
benchmark opened in append mode: one ``write`` each, so records from concurrent workers never
mix, and counting them costs the benchmark an ``os.stat``. The workers are other processes
(the queues' own command lines), so the settings come from the environment.
"""

from __future__ import annotations

import os
import time

#: The environment variables the benchmark sets for its workers.
REDIS_PORT = "BENCH_BACKLOG_REDIS_PORT"
LOG = "BENCH_BACKLOG_LOG"
JOB_SECONDS = "BENCH_BACKLOG_JOB_SECONDS"
#: One record: a pid (10 characters), a space, the time (17), a newline.
RECORD_SIZE = 29


def redis_url(db: int = 0) -> str:
    return f"redis://127.0.0.1:{os.environ[REDIS_PORT]}/{db}"


class _Log:
    """The record file and the job's duration, read once per process (forked workers too)."""

    def __init__(self) -> None:
        self.pid = -1
        self.fd = -1
        self.seconds = 0.0

    def open(self) -> None:
        if self.pid != os.getpid():
            self.fd = os.open(os.environ[LOG], os.O_WRONLY | os.O_APPEND)
            self.seconds = float(os.environ.get(JOB_SECONDS, "0"))
            self.pid = os.getpid()

    def write(self, worker: int) -> None:
        os.write(self.fd, f"{worker:>10d} {time.time():17.6f}\n".encode())


_log = _Log()


def job(number: object = None, *, worker: int | None = None) -> None:
    """Do the job's work (a sleep, as a handler waiting on I/O would), then record it done by
    ``worker`` (default: this process)."""
    _log.open()
    if _log.seconds:
        time.sleep(_log.seconds)
    _log.write(os.getpid() if worker is None else worker)

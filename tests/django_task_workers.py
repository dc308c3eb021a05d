"""Child process for tests/test_django_tasks_outcomes.py: one delivery of the django.tasks
queues, in a process of its own that the parent kills mid-task.

``python -m tests.django_task_workers '<TASKS OPTIONS as JSON>'``, with ``GAESIGNALS_STORE``
(and the rest of the parent's gaesignals settings) in the environment: Django is set up as the
tests set it up, with one ``SignalsBackend`` under those OPTIONS, and its queues delivered once.
"""

from __future__ import annotations

import json
import sys

from tests.django_setup import setup_django

BACKEND = "gaesignals.contrib.django.tasks.SignalsBackend"


def main(options: dict[str, object]) -> None:
    setup_django()
    from django.test import override_settings

    import gaesignals
    from gaesignals.contrib.django.tasks import connect_backends

    with override_settings(TASKS={"default": {"BACKEND": BACKEND, "OPTIONS": options}}):
        connect_backends()
        gaesignals.deliver()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))

"""Django set up for ``gaesignals worker``: ``gaesignals worker gaesignals.contrib.django.worker``
(with ``DJANGO_SETTINGS_MODULE`` set) delivers every signal the project's apps register, and
the queues of its ``django.tasks`` backend (:mod:`.tasks`), as ``manage.py deliver_signals
--loop`` does."""

from __future__ import annotations

import django

django.setup()

"""Django for the tests: the example project's settings with an in-memory SQLite database,
configured once per process (``settings.configure`` cannot run twice) and migrated."""

from __future__ import annotations

import threading

_lock = threading.Lock()


def setup_django() -> None:
    """Configure Django and create the example's tables; later calls do nothing."""
    import django
    from django.conf import settings

    with _lock:
        if settings.configured:
            return
        from django.core.management import call_command

        from examples.django_app import settings as example

        values = {name: getattr(example, name) for name in dir(example) if name.isupper()}
        values["DATABASES"] = {
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
        }
        settings.configure(**values)
        django.setup()
        call_command("migrate", verbosity=0)

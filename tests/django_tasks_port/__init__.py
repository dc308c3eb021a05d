"""Django's own test suite for task backends, run against ``SignalsBackend``.

Django's files are not in this repository: ``scripts/django_tasks_suite.py`` takes
``tests/tasks/`` from the sdist of the Django installed (6.1 here), with Django's LICENSE, into
``upstream/`` (gitignored), and applies ``django-6.1.patch``, our adaptations, each marked
``# ADAPTED:`` with its reason. ``test_django_suite.py`` runs Django's test classes, with their
assertions, once per store (the in-process store, memcached, the App Engine stub) and lists the
cases that cannot apply, with why; ``support.py`` holds what the patch points the cases to.
"""

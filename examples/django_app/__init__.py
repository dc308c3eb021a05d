"""A small Django project: a guestbook whose entries are published by a deferred AsyncSignal.

Run it on the embedded store from the repository's root::

    python examples/django_app/manage.py migrate
    python examples/django_app/manage.py runserver 127.0.0.1:8000
"""

"""Settings of the Django example: the gaesignals app, its middleware, one guestbook app."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

# A development key; set DJANGO_SECRET_KEY anywhere that matters.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-only-example-key-" + "x" * 40)
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "gaesignals.contrib.django",  # configures gaesignals, imports every app's signals.py
    "examples.django_app.guestbook",
]
MIDDLEWARE = [
    "gaesignals.contrib.django.middleware.SignalsMiddleware",  # delivers before each view
    "django.middleware.csrf.CsrfViewMiddleware",
]
ROOT_URLCONF = "examples.django_app.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("GUESTBOOK_DB") or BASE_DIR / "db.sqlite3",
    },
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

# Django 6+ (Python 3.12+): the guestbook's slow work is a django.tasks task, queued in the
# gaesignals store and run by whatever delivers its signals (here the middleware). Django 5
# ignores this setting, and the guestbook sends its AsyncSignal instead.
TASKS = {
    "default": {
        "BACKEND": "gaesignals.contrib.django.tasks.SignalsBackend",
        "QUEUES": ["default"],
    },
}

# STORE, NAMESPACE, SECRET_KEY and CODEC fall back to the GAESIGNALS_* environment variables
# (the embedded in-process store when none is set); CRON_TOKEN to GAESIGNALS_CRON_TOKEN.
GAESIGNALS = {
    "DELIVER": "before",
    "INTERVAL": 0,
}

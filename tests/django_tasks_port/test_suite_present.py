"""Django's task-backend tests are in place wherever Django has ``django.tasks``."""

from __future__ import annotations

import os

import pytest

from .presence import MODULES, UPSTREAM, has_django_tasks, missing


def test_django_suite_is_extracted() -> None:
    """With Django 6, upstream/ holds the installed Django's tests/tasks, patched (CI fails
    without them; a developer's run skips and says which command fetches them)."""
    if not has_django_tasks():
        pytest.skip("django.tasks needs Django 6 (Python 3.12+)")
    reason = missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI runs the script before the tests", pytrace=False)
        pytest.skip(reason)
    files = [UPSTREAM / (module.replace(".", "/") + ".py") for module in MODULES]
    assert [file.name for file in files if not file.is_file()] == []

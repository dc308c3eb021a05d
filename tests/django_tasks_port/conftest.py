"""Django's test files live in ``upstream/`` (see ``__init__.py``), as its ``tests/`` directory
holds them: ``upstream`` goes on ``sys.path`` so that they import as ``tasks.test_tasks``, the
names Django's assertions expect (``tasks.tasks.noop_task``); pytest collects them only through
``test_django_suite.py``, which runs each class once per store."""

from __future__ import annotations

import sys
from pathlib import Path

UPSTREAM = Path(__file__).resolve().parent / "upstream"

collect_ignore = ["upstream"]

if (UPSTREAM / "tasks").is_dir() and str(UPSTREAM) not in sys.path:
    sys.path.insert(0, str(UPSTREAM))

#!/usr/bin/env python
"""``python examples/django_app/manage.py migrate|runserver|deliver_signals`` from anywhere."""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # The repository's root, so ``examples`` and ``gaesignals`` import without installing.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)

"""``python -m gaesignals``: the command line (see :mod:`gaesignals.cli`)."""

from .cli import main

raise SystemExit(main())

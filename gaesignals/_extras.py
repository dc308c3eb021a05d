"""The optional dependencies, by extra, and the one place their absence becomes an error.

Adapters import their client library inside ``with requires("<extra>"):`` (or call
``check("<extra>")`` where importing it must wait); when that library is missing, the bare
``ModuleNotFoundError`` becomes a :class:`~gaesignals.exceptions.MissingExtra`
that says what to install (the CLI prints it as one line and exits 2, as for any bad setting).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

from .exceptions import MissingExtra


class Extra(NamedTuple):
    """One extra of the ``gaesignals`` package: what it installs and who needs it."""

    #: The modules it provides; one of them (or a parent package) missing means it is missing.
    modules: tuple[str, ...]
    #: The distribution pip installs for it, as people know it.
    package: str
    #: What needs it, as a sentence's subject.
    needed_by: str


EXTRAS = {
    "memcached": Extra(("pymemcache",), "pymemcache", "a memcached:// store"),
    "redis": Extra(("redis",), "redis-py", "a redis:// or valkey:// store"),
    "appengine": Extra(
        ("google.appengine",), "appengine-python-standard", "the appengine:// store"
    ),
    "flask": Extra(("flask", "werkzeug"), "Flask", "gaesignals.contrib.flask"),
    "django": Extra(("django",), "Django", "gaesignals.contrib.django"),
    "otel": Extra(("opentelemetry",), "opentelemetry-api", "tracing"),
    "dashboard": Extra(("prometheus_client",), "prometheus_client", "gaesignals.dashboard"),
    "example": Extra(("webapp2",), "webapp2", "gaesignals.browser.frameworks.webapp2"),
}


def missing(extra: str, name: str | None = None) -> MissingExtra:
    """The error for ``extra`` not being installed (``name``: the module found missing)."""
    wanted = EXTRAS[extra]
    return MissingExtra(
        f"{wanted.needed_by} needs {wanted.package}, which is not installed: "
        f'pip install "gaesignals[{extra}]"',
        extra,
        name or wanted.modules[0],
    )


def check(extra: str) -> None:
    """Raise :class:`~gaesignals.exceptions.MissingExtra` now if ``extra``'s modules cannot
    be found, without importing them (a package that must stay cheap to import)."""
    for module in EXTRAS[extra].modules:
        if not _findable(module):
            # What importing it would raise: every MissingExtra carries the import error.
            error = ModuleNotFoundError(f"No module named {module!r}", name=module)
            raise missing(extra, module) from error


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent that is missing, or not a package
        return False


@contextmanager
def requires(extra: str) -> Iterator[None]:
    """Raise :class:`~gaesignals.exceptions.MissingExtra` from the block's imports of
    ``extra``'s modules when they are not installed. A module missing from inside an installed
    one (a broken install) is left as it is: installing the extra would not fix it."""
    try:
        yield
    except MissingExtra:
        raise
    except ModuleNotFoundError as error:
        name = error.name or ""
        absent = next((m for m in EXTRAS[extra].modules if _absent(m, name)), None)
        if absent is None:
            raise
        raise missing(extra, absent if name.startswith(absent + ".") else name) from error


def _absent(module: str, name: str) -> bool:
    """Whether the import that found ``name`` missing shows ``module`` itself missing: ``name``
    is it or a parent, or a submodule of it while it cannot be found either."""
    if (module + ".").startswith(name + "."):
        return True
    return name.startswith(module + ".") and not _findable(module)

"""Loading the user's mapping from an import path, as gunicorn and celery name an app.

``pkg.mod:attr`` names a :class:`~gaesignals.SignalMapping`, a dict, a list of pairs, or a
callable returning one; ``pkg.mod`` alone names the receivers it registers. The current
directory is importable, as with ``python -m``. Whatever goes wrong is a
:class:`~gaesignals.cli.errors.CommandError` (exit 2), one line unless ``verbose``.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from ..mapping import SignalMapping
from ..registration import autodiscover, registry
from .errors import CommandError


def signal_names(
    target: str | None, packages: Sequence[str] = (), *, verbose: bool = False
) -> list[str]:
    """The signals to look at when none are named: those of the mapping ``target`` names
    (``pkg.mod:attr``), else every signal registered or declared once ``target``'s module and
    ``packages`` are imported (with neither, the registry as it is: a program calling
    :func:`~gaesignals.cli.main` in-process has filled it)."""
    if target and ":" in target:
        return list(load_mapping(target, packages, verbose=verbose))
    _importable_here()
    _autodiscover(packages, verbose)
    if target:
        if target.startswith("."):
            raise CommandError(f"{target!r} is not an import path (pkg.mod or pkg.mod:attr)")
        _import(target, verbose)
    return sorted(set(registry.names()) | set(registry.declared()))


def _importable_here() -> None:
    """What `python -m` does, so `gaesignals deliver myapp.signals` works from the project
    root."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())


def _autodiscover(packages: Sequence[str], verbose: bool) -> None:
    if not packages:
        return
    try:
        autodiscover(packages)
    except Exception as error:
        what = f"importing --autodiscover {','.join(packages)}"
        raise _user_code_error(what, error, verbose) from None


def load_mapping(
    target: str | None, packages: Sequence[str] = (), *, verbose: bool = False
) -> SignalMapping:
    """The mapping ``target`` names (see the module docstring), after autodiscovering
    ``packages``; :class:`CommandError` (exit 2) when it names none."""
    if not target and not packages:
        raise CommandError("name a mapping (pkg.mod:attr or pkg.mod) or --autodiscover PKG")
    _importable_here()
    _autodiscover(packages, verbose)
    if not target:
        return _registered(f"--autodiscover {','.join(packages)}")
    module_name, _, attr = target.partition(":")
    if not module_name or module_name.startswith("."):
        raise CommandError(f"{target!r} is not an import path (pkg.mod or pkg.mod:attr)")
    module = _import(module_name, verbose)
    if not attr:
        return _registered(module_name)
    return _mapping_at(module, target, attr, verbose)


def _import(module_name: str, verbose: bool) -> ModuleType:
    """The module, or a CommandError: a module that is not there reads apart from one that
    failed while importing (the user's own error, with its traceback under ``-v``)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and (module_name + ".").startswith(error.name + "."):
            raise CommandError(f"cannot import {module_name!r}: {error}") from None
        raise _user_code_error(f"importing {module_name}", error, verbose) from None
    except Exception as error:
        raise _user_code_error(f"importing {module_name}", error, verbose) from None


def _mapping_at(module: ModuleType, target: str, attr: str, verbose: bool) -> SignalMapping:
    """The mapping at the dotted ``attr`` of ``module``, called first if it is a factory."""
    found: Any = module
    module_name = target.partition(":")[0]
    for part in attr.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise CommandError(f"module {module_name!r} has no attribute {attr!r}") from None
    if callable(found) and not isinstance(found, SignalMapping | Mapping | list | tuple):
        try:
            found = found()
        except Exception as error:
            raise _user_code_error(f"calling {target}()", error, verbose) from None
    if found is None:
        raise CommandError(f"{target} is None, not a signal mapping")
    try:
        mapping = SignalMapping.coerce(found)
    except (TypeError, ValueError) as error:
        raise CommandError(f"{target} is not a signal mapping: {error}") from None
    if not mapping:
        raise CommandError(f"{target} maps no signals")
    return mapping


def _registered(source: str) -> SignalMapping:
    mapping = SignalMapping.coerce(None)
    if not mapping:
        raise CommandError(f"{source} registered no receivers; name a mapping with pkg.mod:attr")
    return mapping


def _user_code_error(what: str, error: BaseException, verbose: bool) -> CommandError:
    """The one line for an error raised by the user's module (its traceback with -v)."""
    if verbose:
        traceback.print_exception(error, file=sys.stderr)
    return CommandError(f"error {what}: {type(error).__name__}: {error}")

"""The road to the cache is :mod:`gaesignals.queue`: which modules call a store's operations.

Read from the package's source with :mod:`ast`, so a call made through any name (``conn``,
``using``, ``self._inner``) is found: only the queue layer, the stores themselves and the
store wrappers of :mod:`gaesignals.testing` may call what a store offers.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

from gaesignals.stores import Connection, FastSend, NativeQueue

PACKAGE = Path(__file__).resolve().parent.parent / "gaesignals"

#: Every operation a store offers: a connection's primitives and the native fast paths.
OPERATIONS = frozenset(
    name
    for protocol in (Connection, NativeQueue, FastSend)
    for name in vars(protocol)
    if not name.startswith("_")
)

#: Where store operations belong: the queue layer, the stores, and the test doubles and
#: capture wrappers that stand in for a store (they pass each call on to the one they wrap).
ALLOWED = ("queue/", "stores/", "testing/capture.py", "testing/doubles.py")

#: Modules that still call store operations and are to move them behind the queue layer
#: (issue 27). The list only shrinks: a module that no longer needs to be here fails the test.
STILL_TO_MOVE: set[str] = set()


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(), str(path))


def _operations_used(tree: ast.Module) -> set[str]:
    """The store operations a module names as an attribute (called, or passed on)."""
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in OPERATIONS
    }


def _callers() -> dict[str, set[str]]:
    """Each module outside :data:`ALLOWED` that uses a store operation, and which ones."""
    found = {}
    for module, tree in _modules():
        if module.startswith(ALLOWED):
            continue
        used = _operations_used(tree)
        if used:
            found[module] = used
    return found


def test_operations_are_every_method_a_store_offers() -> None:
    """The operations looked for are the Connection protocol's (and the native paths'), so a
    primitive added to the protocol is looked for too."""
    assert {"gets_many", "scan_many", "cas_many", "add_many", "set_many"} <= OPERATIONS
    assert {"append_many", "incr_many", "delete_many", "take_many", "append_one"} <= OPERATIONS
    assert "connection" not in OPERATIONS


def test_the_finder_sees_a_call_through_any_name() -> None:
    """A primitive called on any object, or passed on uncalled, is found; a function of the
    same name imported from the queue layer is not an attribute, so it is not."""
    source = "a.b.gets_many([k])\nf(using.incr_many)\nacknowledge(conn, store)\n"
    assert _operations_used(ast.parse(source)) == {"gets_many", "incr_many"}


def test_only_the_queue_layer_calls_a_store() -> None:
    """No module outside the queue layer, the stores and the testing wrappers calls a store
    operation, but for those listed as still to move."""
    strays = {module: used for module, used in _callers().items() if module not in STILL_TO_MOVE}
    assert strays == {}


def test_the_list_of_modules_still_to_move_only_shrinks() -> None:
    """Every module listed as still to move still calls a store (else strike it off)."""
    assert STILL_TO_MOVE - set(_callers()) == set()


def test_no_test_package_shadows_the_standard_library() -> None:
    """No package under ``tests/`` takes a standard-library name: the worker scripts there
    run with ``tests/`` first on ``sys.path``, where a ``tests/queue`` would hide ``queue``."""
    tests = Path(__file__).resolve().parent
    packages = {init.parent.name for init in tests.glob("*/__init__.py")}
    assert packages & sys.stdlib_module_names == set()

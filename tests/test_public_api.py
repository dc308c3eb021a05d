"""The public surface: what ``import gaesignals`` offers, and that no module hides behind a name."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import types

import pytest

import gaesignals
import gaesignals.delivery


def _submodules() -> list[str]:
    """Every module of the package that imports without an optional extra's dependency."""
    names = []
    for info in pkgutil.walk_packages(gaesignals.__path__, "gaesignals."):
        if ".contrib." in info.name or info.name.endswith(".__main__"):
            continue
        names.append(info.name)
    return names


@pytest.mark.parametrize("name", _submodules())
def test_no_module_is_shadowed_by_a_name_in_its_package(name: str) -> None:
    """``import gaesignals.x as m`` gives the module x, never a function or object named x."""
    module = importlib.import_module(name)
    parent_name, _, child = name.rpartition(".")
    parent = importlib.import_module(parent_name)
    assert isinstance(module, types.ModuleType)
    assert getattr(parent, child) is module, f"{parent_name}.{child} is not the module {name}"


def test_every_public_name_is_importable() -> None:
    """Each name in ``__all__`` exists, the types the signatures use among them."""
    for name in gaesignals.__all__:
        assert getattr(gaesignals, name) is not None
    assert {"RetryPolicy", "Settings", "asend_multi"} <= set(gaesignals.__all__)
    assert gaesignals.Settings is type(gaesignals.configure())


def test_delivery_offers_the_delivering_side_only() -> None:
    """``gaesignals.delivery`` re-exports nothing of the sending side."""
    assert "send_now" not in gaesignals.delivery.__all__
    assert "asend_now" not in gaesignals.delivery.__all__
    assert not hasattr(gaesignals.delivery, "send_now")


def test_asend_multi_stores_what_send_multi_stores() -> None:
    """``asend_multi`` stores every payload, in order, for a later delivery."""
    got: list[tuple[str, object]] = []
    asyncio.run(gaesignals.asend_multi([("a", 1), ("b", 2), ("a", 3)]))
    delivered = gaesignals.deliver(
        [("a", lambda data: got.append(("a", data))), ("b", lambda data: got.append(("b", data)))]
    )
    assert delivered == 3
    assert got == [("a", 1), ("a", 3), ("b", 2)]

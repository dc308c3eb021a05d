"""The bridge's static files ship in the package: pyproject.toml's package data names them,
and they are read from the installed package, not from the source tree."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from importlib.resources import files
from pathlib import Path

import gaesignals.browser

ROOT = Path(__file__).resolve().parents[2]
STATIC = Path(gaesignals.browser.__file__).parent / "static"


def test_the_package_data_names_every_static_file() -> None:
    """Each file of gaesignals/browser/static matches a package-data pattern, so a wheel
    carries client.js and client.d.ts."""
    with open(ROOT / "pyproject.toml", "rb") as file:
        patterns = tomllib.load(file)["tool"]["setuptools"]["package-data"]["gaesignals"]
    shipped = sorted(path.name for path in STATIC.iterdir() if path.is_file())
    assert shipped == ["client.d.ts", "client.js"]
    for name in shipped:
        assert any(fnmatch(f"browser/static/{name}", pattern) for pattern in patterns), name


def test_the_static_files_are_package_resources() -> None:
    """The bridge reads its files as resources of its package (what an installed wheel
    has), and the script is a module with the functions its types declare."""
    script = (files("gaesignals.browser") / "static" / "client.js").read_text()
    types = (files("gaesignals.browser") / "static" / "client.d.ts").read_text()
    for name in ("connect", "call", "disconnect", "configure", "onReset"):
        assert f"export function {name}(" in script or f"export async function {name}(" in script
        assert f"export function {name}" in types
    assert "innerHTML" not in script and "import " not in script.replace("import.meta", "")

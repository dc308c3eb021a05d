"""The package's metadata, as a user sees it on an index page and as pip installs it."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path
from typing import Any

import gaesignals

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = "https://github.com/gaesignals/gaesignals"
DOCUMENTATION = "https://gaesignals.readthedocs.io/"


def project() -> dict[str, Any]:
    with open(ROOT / "pyproject.toml", "rb") as file:
        found: dict[str, Any] = tomllib.load(file)
    return found


def test_the_version_is_written_once() -> None:
    """pyproject.toml takes its version from gaesignals.__version__, and the installed
    distribution reports that version."""
    pyproject = project()
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "gaesignals.__version__"
    }
    assert gaesignals.__version__ == importlib.metadata.version("gaesignals")


def test_the_test_tools_are_a_dependency_group_not_an_extra() -> None:
    """The developers' test dependencies are a PEP 735 group, so no published extra offers
    users pytest, ruff and mypy; the user extras stay."""
    pyproject = project()
    extras = pyproject["project"]["optional-dependencies"]
    assert "test" not in extras
    assert {"memcached", "redis", "appengine", "flask", "django", "dashboard"} <= set(extras)
    group = pyproject["dependency-groups"]["test"]
    assert any(requirement.startswith("pytest") for requirement in group)
    assert "--group test" in (ROOT / ".ci" / "run").read_text()


def test_the_index_page_says_what_a_user_checks() -> None:
    """Project URLs, the Python versions CI tests, the frameworks, a development status, and
    a summary that does not promise more than weak delivery keeps."""
    metadata = project()["project"]
    assert metadata["urls"]["Source"] == REPOSITORY
    assert metadata["urls"]["Documentation"] == DOCUMENTATION
    assert all(url.startswith((REPOSITORY, DOCUMENTATION)) for url in metadata["urls"].values())
    classifiers = set(metadata["classifiers"])
    for minor in (11, 12, 13):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    assert metadata["requires-python"] == ">=3.11"
    assert {"Framework :: Django", "Framework :: Flask", "Typing :: Typed"} <= classifiers
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    assert "lose nothing" not in metadata["description"]
    assert "at most once" in metadata["description"]


def test_the_sdist_and_read_the_docs_carry_the_documentation() -> None:
    """MANIFEST.in puts docs/ in the sdist, and Read the Docs builds docs/ with the docs
    extra (warnings as errors, as CI does)."""
    manifest = (ROOT / "MANIFEST.in").read_text().splitlines()
    assert "graft docs" in manifest
    readthedocs = (ROOT / ".readthedocs.yaml").read_text()
    assert "configuration: docs/conf.py" in readthedocs
    assert "- docs" in readthedocs
    assert "fail_on_warning: true" in readthedocs

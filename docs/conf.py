"""Sphinx configuration for the gaesignals documentation: MyST Markdown pages, the furo theme,
and an API reference from the docstrings. Built in CI with warnings as errors:

    .venv/bin/sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's gaesignals, not an installed one

import gaesignals  # noqa: E402  (after the path is set)

project = "gaesignals"
author = "gaesignals developers"
copyright = "gaesignals developers, MIT licence"
release = "0.1.0.dev0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", ".*", "**/.*"]  # the build, and hidden caches

# MyST: ::: fences for admonitions, and anchors for the headings of every page (and of the
# Markdown files included from the repository's root) down to the third level.
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# The site builds from the docs extra alone (CI does, in a venv of its own): the framework
# integrations and the pytest plugin import their framework at the top, and autodoc imports
# them with these stood in, since their pages show only gaesignals' own docstrings.
autodoc_mock_imports = ["asgiref", "django", "flask", "pytest", "werkzeug"]

html_theme = "furo"
html_title = f"gaesignals {release}"
html_static_path = ["_static"]
html_css_files = ["gaesignals.css"]

# The version the pages describe is the one built; nothing is fetched from the network.
del gaesignals

"""The documentation site for its tests: built once per session from docs/ with warnings as
errors, or, where Sphinx is not installed, the build ``.ci/run`` made when it is not older than
its sources."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from gaesignals.pytest_plugin import _missing as missing

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CI_BUILD = DOCS / "_build" / "html"  # where .ci/run builds it


def sources() -> list[Path]:
    """What the site is made of: its pages and static files, the Markdown files they include,
    and the package whose docstrings autodoc reads."""
    found = [path for path in DOCS.rglob("*") if path.is_file() and "_build" not in path.parts]
    found += [ROOT / name for name in ("BENCHMARKS.md", "RELIABILITY.md", "CHANGES.md")]
    return found + sorted((ROOT / "gaesignals").rglob("*.py"))


def is_current(build: Path) -> bool:
    """Whether ``build`` holds a whole site made after its sources last changed."""
    index = build / "index.html"
    if not index.is_file():
        return False
    built = index.stat().st_mtime
    return all(path.stat().st_mtime <= built for path in sources())


def build_site(out: Path) -> Path:
    """The site, built into ``out`` by this Python's Sphinx as CI builds it (``-W``); or the
    current CI build where Sphinx is missing; skips (fails under CI) when there is neither."""
    if importlib.util.find_spec("sphinx") is None:
        if is_current(CI_BUILD):
            return CI_BUILD
        missing("sphinx is not installed (pip install 'gaesignals[docs]') and no current build")
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    command += ["-d", str(out / ".doctrees"), str(DOCS), str(out / "html")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"sphinx-build failed:\n{done.stdout}\n{done.stderr}"
    return out / "html"

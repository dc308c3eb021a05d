"""scripts/django_tasks_suite.py applies our patch to Django's files exactly, or refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from .presence import load_script

suite = load_script()

ORIGINAL = "one\ntwo\nthree\nfour\nfive\nsix\n"
PATCH = """A header line, ignored.
--- a/tasks/x.py
+++ b/tasks/x.py
@@ -1,2 +1,3 @@
 one
+one and a half
 two
@@ -5,2 +6,1 @@
-five
 six
"""


def test_apply_patch_changes_what_its_hunks_say(tmp_path: Path) -> None:
    """Each hunk applies where it says, the lines added by one shifting the next."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "x.py").write_text(ORIGINAL)
    suite.apply_patch(PATCH, tmp_path)
    expected = "one\none and a half\ntwo\nthree\nfour\nsix\n"
    assert (tmp_path / "tasks" / "x.py").read_text() == expected


def test_apply_patch_refuses_a_hunk_that_does_not_match(tmp_path: Path) -> None:
    """A context or removed line that differs (a new Django release) is refused, the file left
    as it was."""
    (tmp_path / "tasks").mkdir()
    changed = ORIGINAL.replace("five", "FIVE")
    (tmp_path / "tasks" / "x.py").write_text(changed)
    with pytest.raises(suite.PatchError, match=r"tasks/x\.py: the hunk at line 5 does not match"):
        suite.apply_patch(PATCH, tmp_path)
    assert (tmp_path / "tasks" / "x.py").read_text() == changed


def test_every_line_the_django_patch_adds_says_why() -> None:
    """Each line our patch puts in Django's files is marked ``# ADAPTED:`` with its reason."""
    patch = (Path(__file__).parent / "django-6.1.patch").read_text().splitlines()
    added = [line for line in patch if line.startswith("+") and not line.startswith("+++")]
    assert added
    assert [line for line in added if "# ADAPTED: " not in line] == []

"""Fetches Django's own task-backend tests (``tests/tasks/`` of the sdist of the Django installed
here), adapts them to ``SignalsBackend`` with our patch, and puts them where pytest finds them.

    python scripts/django_tasks_suite.py [--sdist django-X.Y.Z.tar.gz]

Django's test files are never committed here: they are downloaded (``pip download``, the index
CI installs from) into ``tests/django_tasks_port/upstream/tasks/`` (gitignored), beside Django's
LICENSE, and ``tests/django_tasks_port/django-X.Y.patch`` (ours, each change marked
``# ADAPTED:``) is applied to them. A patch that does not apply exactly is refused, and nothing
already extracted is touched. Nothing is fetched when ``upstream/`` already holds this Django's
files with this patch (``--force`` fetches anyway), nor without ``django.tasks`` (Django 5).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORT = ROOT / "tests" / "django_tasks_port"
UPSTREAM = PORT / "upstream"
#: Written last into UPSTREAM: which Django and which patch its files come from (:func:`stamp`).
STAMP_FILE = "STAMP"
HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class PatchError(Exception):
    """The patch does not apply exactly to Django's files."""


def patch_file(version: str) -> Path:
    """Our patch for Django ``version``: one per minor release (``django-6.1.patch``)."""
    return PORT / "django-{}.{}.patch".format(*version.split(".")[:2])


def stamp(version: str) -> str:
    """What UPSTREAM holds once set up for Django ``version``: that version, and the hash of
    the patch applied (a changed patch needs the files fetched again)."""
    patch = patch_file(version)
    digest = hashlib.sha256(patch.read_bytes()).hexdigest() if patch.exists() else "none"
    return f"Django {version}, {patch.name} sha256 {digest}\n"


def download_sdist(version: str, directory: Path) -> Path:
    """Django's sdist for ``version``, through this interpreter's pip."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    command += ["--no-binary", ":all:", f"django=={version}", "-d", str(directory)]
    subprocess.run(command, check=True)
    found = sorted(directory.glob("django-*.tar.gz"))
    if not found:
        raise SystemExit(f"pip download left no Django sdist in {directory}")
    return found[0]


def extract(sdist: Path, version: str, target: Path) -> None:
    """Django's ``tests/tasks/*.py`` into ``target/tasks`` and its LICENSE into ``target``."""
    prefix = f"django-{version}/"
    (target / "tasks").mkdir(parents=True)
    with tarfile.open(sdist) as archive:
        members = {member.name: member for member in archive.getmembers() if member.isfile()}
        wanted = [name for name in members if re.fullmatch(rf"{prefix}tests/tasks/\w+\.py", name)]
        if not wanted:
            raise SystemExit(f"{sdist.name} holds no {prefix}tests/tasks/*.py")
        for name in [*wanted, prefix + "LICENSE"]:
            source = archive.extractfile(members[name])
            assert source is not None  # a regular file
            relative = name.removeprefix(prefix + "tests/").removeprefix(prefix)
            (target / relative).write_bytes(source.read())


def apply_patch(patch: str, target: Path) -> None:
    """Apply a unified diff to the files under ``target``: every context and removed line must
    match where its hunk says (no fuzz, no offset), else :class:`PatchError`."""
    for path, hunks in _files(patch):
        file = target / path
        lines = file.read_text().splitlines(keepends=True)
        shift = 0
        for start, body in hunks:
            at = start - 1 + shift if start else 0
            old = [line[1:] for line in body if line[0] in " -"]
            new = [line[1:] for line in body if line[0] in " +"]
            if lines[at : at + len(old)] != old:
                raise PatchError(f"{path}: the hunk at line {start} does not match")
            lines[at : at + len(old)] = new
            shift += len(new) - len(old)
        file.write_text("".join(lines))


def _files(patch: str) -> list[tuple[str, list[tuple[int, list[str]]]]]:
    """The patch's files (the path after ``b/``), each with its hunks: (old start, lines)."""
    files: list[tuple[str, list[tuple[int, list[str]]]]] = []
    for line in patch.splitlines(keepends=True):
        if line.startswith("+++ "):
            files.append((line[4:].split()[0].removeprefix("b/"), []))
        elif match := HUNK.match(line):
            files[-1][1].append((int(match[1]), []))
        elif line[:1] in (" ", "-", "+") and not line.startswith("--- ") and files:
            files[-1][1][-1][1].append(line if line.endswith("\n") else line + "\n")
    return files


def install(version: str, sdist: Path | None) -> None:
    """Extract and patch into a scratch directory, then replace UPSTREAM with it."""
    patch = patch_file(version)
    if not patch.exists():
        raise SystemExit(
            f"no {patch.relative_to(ROOT)}: Django {version} is not one the port supports "
            "(the test group pins the Django it was written for)"
        )
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if sdist is None:
            sdist = download_sdist(version, work / "sdist")
        built = work / "upstream"
        extract(sdist, version, built)
        try:
            apply_patch(patch.read_text(), built)
        except PatchError as error:
            raise SystemExit(
                f"{patch.relative_to(ROOT)} does not apply to Django {version}'s "
                f"tests/tasks ({error}): update the patch for this release"
            ) from error
        (built / STAMP_FILE).write_text(stamp(version))
        shutil.rmtree(UPSTREAM, ignore_errors=True)
        shutil.copytree(built, UPSTREAM)
    print(f"Django {version}'s tests/tasks, patched, in {UPSTREAM.relative_to(ROOT)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", type=Path, help="a downloaded django-X.Y.Z.tar.gz to use")
    parser.add_argument("--force", action="store_true", help="fetch even when up to date")
    args = parser.parse_args()
    if importlib.util.find_spec("django") is None:
        print("Django is not installed here: nothing to do")
        return 0
    version = importlib.metadata.version("django")
    if importlib.util.find_spec("django.tasks") is None:
        print(f"Django {version} has no django.tasks (it came in Django 6): nothing to do")
        return 0
    if not args.force and current_stamp() == stamp(version):
        print(f"{UPSTREAM.relative_to(ROOT)} already holds Django {version}'s tests/tasks, patched")
        return 0
    install(version, args.sdist)
    return 0


def current_stamp() -> str | None:
    """What UPSTREAM holds (:func:`stamp`), or None when nothing was set up there."""
    try:
        return (UPSTREAM / STAMP_FILE).read_text()
    except FileNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())

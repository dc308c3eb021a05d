"""The front door: the README stays short and points at files that exist, the test command it
gives is the one CI runs, and no page sends readers to one machine's paths. (The code blocks of
README.md and docs/*.md run as tests of their own, through sybil: see conftest.py.)"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import gaesignals
from gaesignals import config, tracing
from gaesignals.stores.memory import MemoryStore

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CI = (ROOT / ".ci" / "run").read_text()
DOCS_SITE = "https://gaesignals.readthedocs.io/en/latest/"
REPOSITORY = "https://github.com/gaesignals/gaesignals"


def test_the_readme_is_a_front_door() -> None:
    """The README is at most ~200 lines, says how to install each extra, and gives both
    commands for a fresh clone."""
    assert len(README.splitlines()) <= 200
    for extra in ("appengine", "memcached", "redis"):
        assert f'pip install "gaesignals[{extra}]"' in README
    assert "flask" in README and "django" in README
    assert "scripts/run_example.sh" in README and "bash .ci/run" in README


def test_the_readme_test_command_is_the_one_ci_runs() -> None:
    """README.md names `.venv/bin/python -m pytest`; .ci/run runs exactly that in .venv (and
    the same in .venv313), after building the docs with warnings as errors."""
    assert "`.venv/bin/python -m pytest`" in README
    assert '".venv 11"' in CI and '"$venv/bin/python" -m pytest' in CI
    build = ".venv-docs/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html"
    assert build in CI
    assert CI.index(".venv/bin/mypy") < CI.index(build) < CI.index("-m pytest")


def test_ci_builds_the_docs_from_the_docs_extra_alone() -> None:
    """.ci/run builds the site in a venv it makes afresh and into which it installs nothing
    but the docs extra, and the README's build command is the same, warnings as errors."""
    docs_venv = [line for line in CI.splitlines() if ".venv-docs" in line]
    assert docs_venv[:2] == ["rm -rf .venv-docs", '"$(find_python 11)" -m venv .venv-docs']
    installs = [line.split("install -q ")[1] for line in docs_venv if " install " in line]
    assert installs == ["--upgrade pip", "-e '.[docs]'"]
    assert 'pip install -e ".[docs]"' in README
    assert "sphinx-build -W --keep-going -b html docs docs/_build/html" in README


def test_the_readme_links_work_outside_the_repository() -> None:
    """Every link of the README is absolute, so that it works where the README is shown on
    its own (a package index's page): pages of the docs site that docs/ holds, and files of
    the repository that exist; every reference link is defined."""
    inline = re.findall(r"\]\(([^)]+)\)", README)
    defined = dict(re.findall(r"^\[([^\]]+)\]: (\S+)$", README, flags=re.MULTILINE))
    used = set(re.findall(r"\]\[([^\]]+)\]", README))
    assert used - defined.keys() == set()
    targets = inline + list(defined.values()) + re.findall(r"<(\w+://[^>]+)>", README)
    assert f"{DOCS_SITE}getting-started.html" in targets
    relative = [target for target in targets if "://" not in target]
    assert relative == []
    missing = []
    for target in targets:
        if target.startswith(DOCS_SITE) and target != DOCS_SITE:
            page = target.removeprefix(DOCS_SITE).removesuffix(".html")
            missing += [] if (ROOT / "docs" / f"{page}.md").is_file() else [target]
        elif target.startswith(f"{REPOSITORY}/blob/main/"):
            path = target.removeprefix(f"{REPOSITORY}/blob/main/")
            missing += [] if (ROOT / path).is_file() else [target]
    assert missing == []


def test_the_readme_installs_from_a_clone_until_released() -> None:
    """While the version is a development one, the README's first install command is from a
    clone of the repository, with an extra pyproject.toml defines; the index's lines follow."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    version = project.get("version") or vars(gaesignals)["__version__"]
    assert ".dev" in version
    clone = README.index(f"git clone {REPOSITORY} && cd gaesignals")
    [extra] = re.findall(r'^pip install -e "\.\[(\w+)\]"$', README, flags=re.MULTILINE)
    assert extra in project["optional-dependencies"]
    assert clone < README.index(f'pip install -e ".[{extra}]"') < README.index('pip install "gaes')
    assert "not on PyPI yet" in README


def test_readme_and_docs_are_collected_by_pytest() -> None:
    """pytest's default run includes the README and the docs, whose code blocks sybil runs."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    testpaths = config["tool"]["pytest"]["ini_options"]["testpaths"]
    assert testpaths == ["tests", "README.md", "docs"]
    sybil = (ROOT / "conftest.py").read_text()
    assert 'patterns=["README.md", "docs/*.md"]' in sybil


def test_no_page_names_one_machines_paths() -> None:
    """The README, the docs, BENCHMARKS.md and RELIABILITY.md name paths any clone has."""
    pages = [ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "RELIABILITY.md"]
    pages += sorted((ROOT / "docs").glob("*.md"))
    for page in pages:
        text = page.read_text()
        for path in ("/work/", "/home/", "/root/"):
            assert path not in text, (page.name, path)


def test_deliver_signals_is_not_offered_on_the_embedded_store() -> None:
    """The docs never list `manage.py deliver_signals` as something to run on the embedded
    store, where it runs in another process and can find nothing."""
    text = (ROOT / "docs" / "frameworks.md").read_text()
    assert "finds nothing" in text
    examples = text[text.index("## Examples in the repository") :]
    start = examples.index("```sh")
    plain_run = examples[start : examples.index("```\n", start + 5)]
    assert "deliver_signals" not in plain_run


def test_each_page_runs_on_fresh_settings_and_puts_them_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The doc pages' setup clears the GAESIGNALS_* environment, the settings and the
    registry, and configures the embedded store; its teardown forgets what the page set and
    puts the environment back."""
    import conftest  # the repository root's: sybil's setup and teardown for the pages

    monkeypatch.setenv("GAESIGNALS_NAMESPACE", "before")
    gaesignals.connect("left_over", print)
    namespace: dict[str, object] = {}
    conftest._fresh(namespace)
    assert "GAESIGNALS_NAMESPACE" not in os.environ
    assert gaesignals.registry.names() == []
    assert isinstance(config.get_settings().store, MemoryStore)
    assert config.get_settings().namespace == ""
    os.environ["GAESIGNALS_CODEC"] = "json"  # what a page might do
    gaesignals.configure(store="memory://", namespace="page")
    gaesignals.connect("on_the_page", print)
    conftest._restore(namespace)
    assert config._settings is None and gaesignals.registry.names() == []
    assert os.environ["GAESIGNALS_NAMESPACE"] == "before"
    assert "GAESIGNALS_CODEC" not in os.environ


def test_a_page_that_sets_a_global_tracer_provider_leaves_none_behind() -> None:
    """docs/observability.md sets OpenTelemetry's global tracer provider; the page's teardown
    unsets it, so later tests' sends are untraced again."""
    import conftest

    namespace: dict[str, object] = {}
    conftest._fresh(namespace)
    trace.set_tracer_provider(TracerProvider())
    assert tracing.active()
    conftest._restore(namespace)
    assert not tracing.active()
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)

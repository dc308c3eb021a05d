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
    build = ".venv/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html"
    assert build in CI
    assert CI.index(".venv/bin/mypy") < CI.index(build) < CI.index("-m pytest")


def test_the_readme_links_to_files_that_exist() -> None:
    """Every relative link of the README names a file of the repository."""
    links = re.findall(r"\]\(([^)#:]+)\)", README)
    assert "docs/getting-started.md" in links
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert missing == []


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

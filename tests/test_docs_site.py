"""The documentation site as built: the API page starts with what a reader calls first and
links only to pages the site holds, and every page fits a 1280 px screen in a real browser
(Debian's chromium, headless, driven by playwright), code blocks included."""

from __future__ import annotations

import enum
import html
import importlib
import importlib.util
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

import gaesignals
from gaesignals import exceptions
from gaesignals.pytest_plugin import _missing as missing
from tests.browser_support import CHROMIUM_ARGS, chromium, need_chromium
from tests.docs_support import build_site

#: The page's sideways overflow, and each code block wider than its box.
OVERFLOW = """() => {
  const doc = document.documentElement;
  const blocks = [...document.querySelectorAll('pre')]
    .filter(pre => pre.scrollWidth > pre.clientWidth)
    .map(pre => pre.textContent.split('\\n').reduce((a, b) => (a.length >= b.length ? a : b)));
  return {page: doc.scrollWidth - doc.clientWidth, blocks};
}"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_site(tmp_path_factory.mktemp("docs"))


def documented(page: str) -> list[str]:
    """The objects a page describes at the top level, in order (not their methods)."""
    ids = re.findall(r'<dt class="sig sig-object py" id="([^"]+)"', page)
    return [name for name in ids if name.count(".") == 1]


def test_the_api_page_starts_with_signal_send_and_deliver(site: Path) -> None:
    """The reference opens on ``Signal``, ``send`` and ``deliver``, documents each public name
    of ``gaesignals`` once, and keeps the errors for the end of its first section."""
    names = documented((site / "api.html").read_text())
    top = [name for name in names if name.split(".")[0] == "gaesignals"]
    assert top[0] == "gaesignals.Signal"
    assert top.index("gaesignals.send") < top.index("gaesignals.deliver") < 10
    public = [f"gaesignals.{name}" for name in gaesignals.__all__]
    assert sorted(name for name in top if name in public) == sorted(public)
    errors = [name for name in top if hasattr(exceptions, name.split(".")[1])]
    assert top[-len(errors) :] == errors and len(errors) >= 10


def test_the_api_page_links_only_to_the_site(site: Path) -> None:
    """The API page names no README and its links to pages lead to pages the site holds (the
    package's docstring points to the Delivering page)."""
    page = (site / "api.html").read_text()
    assert "README" not in page
    targets = set(re.findall(r'href="([^"#:]+\.html)', page))
    assert "delivering.html" in targets
    assert [target for target in targets if not (site / target).is_file()] == []


def page_signatures(page: str) -> dict[str, list[str]]:
    """Each object of a page with its parameters as shown: ``name``, ``*args``, ``*``..."""
    found = {}
    for name, sig in re.findall(
        r'<dt class="sig sig-object py" id="([^"]+)">(.*?)</dt>', page, re.S
    ):
        shown = [
            re.sub(r"<[^>]+>", "", param)
            for param in re.findall(r'<em class="sig-param">(.*?)</em>', sig, re.S)
        ]
        found[name] = [re.match(r"\**\w*|/", html.unescape(param)).group() for param in shown]
    return found


def parameters(target: Any) -> list[str] | None:
    """``target``'s parameters as Sphinx shows them, or None where it has no signature. An
    enum is called with one value (a lookup: its metaclass's other parameters make new enums,
    and differ between Pythons), which is what Sphinx shows."""
    if isinstance(target, enum.EnumType):
        return ["value"]
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    shown: list[str] = []
    kinds = inspect.Parameter
    for param in signature.parameters.values():
        if param.kind is kinds.KEYWORD_ONLY and not any(n.startswith("*") for n in shown):
            shown.append("*")
        shown.append(
            {kinds.VAR_POSITIONAL: "*", kinds.VAR_KEYWORD: "**"}.get(param.kind, "") + param.name
        )
    return shown


def test_the_api_page_shows_the_real_signatures(site: Path) -> None:
    """Every class and function of the API page shows the parameters it really takes, those
    of modules whose framework autodoc stood in for (Flask, Django, pytest) included."""
    wrong, checked = {}, 0
    for name, shown in page_signatures((site / "api.html").read_text()).items():
        module_name, _, attribute = name.rpartition(".")
        try:
            target = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError):
            continue  # a method or an attribute: its class is checked
        if callable(target) and (real := parameters(target)) is not None:
            checked += 1
            if real != shown:
                wrong[name] = (shown, real)
    assert wrong == {} and checked > 50


def test_no_page_scrolls_sideways_at_1280_px(site: Path) -> None:
    """At 1280 px no page of the site scrolls sideways and no code block is wider than its
    column, with no console error."""
    executable = need_chromium(chromium())
    if importlib.util.find_spec("playwright") is None:
        missing("playwright is not installed (pip install 'gaesignals[test]')")
    from playwright.sync_api import sync_playwright

    pages = sorted(site.glob("*.html"))
    assert len(pages) > 20
    overflowing: dict[str, Any] = {}
    errors: list[str] = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            tab.on("pageerror", lambda error: errors.append(str(error)))
            for path in pages:
                tab.goto(path.as_uri())
                found = tab.evaluate(OVERFLOW)
                if found["page"] or found["blocks"]:
                    overflowing[path.name] = found
        finally:
            browser.close()
    assert overflowing == {}
    assert errors == []

"""Fixtures of the dashboard's WSGI suites: no token in the environment, the app with the test
token, and a logged-in browser session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import webtest

from gaesignals.dashboard import TOKEN_ENV, DashboardApp
from gaesignals.stores import Store
from tests.dashboard_support import (
    TOKEN,
    login,
)


@pytest.fixture(autouse=True)
def _no_token_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)


@pytest.fixture
def app(gaesignals_store: Store) -> webtest.TestApp:
    """The dashboard over every registered or declared signal, with the test token."""
    return webtest.TestApp(DashboardApp(token=TOKEN))


@pytest.fixture
def browser(app: webtest.TestApp) -> Iterator[webtest.TestApp]:
    """The dashboard with a logged-in browser session."""
    assert login(app).status_int == 303
    yield app

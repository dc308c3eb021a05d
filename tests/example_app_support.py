"""What the example app's suites (``test_example_app*``) share: each imports the fixture that keeps
the App Engine environment out of the test (it is autouse)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _not_on_app_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GAE_ENV", "GAE_APPLICATION", "GAESIGNALS_CRON_TOKEN"):
        monkeypatch.delenv(name, raising=False)

"""What the tracing suites (``test_tracing*``) share: both delivery modes as a parametrization."""

from __future__ import annotations

import pytest

MODES = pytest.mark.parametrize("reliable", [False, True], ids=["weak", "reliable"])

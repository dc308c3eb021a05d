"""What the bridge adds to the public surface, and what it costs ``import gaesignals``."""

from __future__ import annotations

import subprocess
import sys

import gaesignals
import gaesignals.browser


def test_send_to_browser_is_public() -> None:
    """``gaesignals.send_to_browser`` is the bridge's, and the bridge's names are exported."""
    assert "send_to_browser" in gaesignals.__all__
    assert gaesignals.send_to_browser is gaesignals.browser.send_to_browser
    assert {"Bridge", "BrowserCall", "Visitor", "csrf_token", "mount"} <= set(
        gaesignals.browser.__all__
    )


def test_importing_gaesignals_imports_no_framework_and_no_asyncio() -> None:
    """``import gaesignals`` (which imports the bridge) imports no web framework, and not
    asyncio, which only the ASGI bridge needs and a WSGI app's cold start would pay for."""
    code = (
        "import sys, gaesignals; names = ('asyncio', 'flask', 'werkzeug', 'django', "
        "'starlette', 'webapp2', 'webob'); print(sorted(m for m in names if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

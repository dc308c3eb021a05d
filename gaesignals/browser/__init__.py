"""Signals between the browser and the server, over the cache every instance shares.

Python posts to pages with :func:`send_to_browser` (a window, a session, a user, or every
visitor); a page's JavaScript (``client.js``, served by the bridge) connects handlers to signal
names and calls the Python signals declared ``from_browser``. :class:`Bridge` is the WSGI app
to mount at a prefix; :class:`gaesignals.browser.asgi.BridgeASGI` is the same bridge for ASGI
servers, with server-sent events where the server streams. ``docs/browser-protocol.md`` gives
the HTTP protocol between the two.
"""

from .bridge import Bridge, mount
from .messages import send_to_browser
from .visitors import BrowserCall, Visitor, anonymous, csrf_token, session_tag

__all__ = [
    "Bridge",
    "BrowserCall",
    "Visitor",
    "anonymous",
    "csrf_token",
    "mount",
    "send_to_browser",
    "session_tag",
]

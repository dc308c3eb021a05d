"""Who the visitor is, as each host framework knows them: an ``identify`` for the bridge, and
``visitor(...)`` for the page that embeds the CSRF token, in one module per framework, each
importing its framework (install the matching extra; ``import gaesignals`` imports none).

- :mod:`.django`: ``request.user`` and ``request.session``, the bridge mounted as a Django view
  (:func:`gaesignals.browser.frameworks.django.view`), which hands the request over;
- :mod:`.flask`: Flask's signed-cookie session, opened from the request's cookie;
- :mod:`.starlette`: ``scope["session"]`` (``SessionMiddleware``) and ``scope["user"]``
  (``AuthenticationMiddleware``), the ASGI bridge mounted inside the app;
- :mod:`.webapp2`: callables given the ``webapp2.Request``.

Sessions kept in a signed cookie have no id of their own: the page's ``visitor(...)`` puts one
in the session (saved with the page's response), and ``identify`` reads it back.
"""

#: The key of the session id the cookie-session adapters keep in a session.
SESSION_FIELD = "gaesignals.session"
#: The environ key under which a mounting view leaves the framework's request.
REQUEST = "gaesignals.request"

"""The middleware hook the first-generation App Engine runtime called by itself.

App Engine's Python 3 runtime no longer loads this file, so ``main.py`` calls
``webapp_add_wsgi_middleware`` itself; the function is the one the 2011 README shows.
"""

from gaesignals import SignalsMiddleware

from .signals import guestbook_handler


# fmt: off
# Kept exactly as the 2011 README shows it.
def webapp_add_wsgi_middleware(app):
    app = SignalsMiddleware(app, [
        ('guestbook', guestbook_handler)
    ])
    return app
# fmt: on

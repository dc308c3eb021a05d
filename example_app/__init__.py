"""A small webapp2 app that shows signals going from sent to delivered.

``main.py`` builds the WSGI app (gunicorn serves ``example_app.main:app``), ``handlers.py`` the
pages, ``signals.py`` the signals and their handlers, ``records.py`` the shared record the
handlers write, and ``appengine_config.py`` the middleware, as the 2011 README set it up.
``live.py`` and ``live.js`` make the front page live: browser signals, through the bridge
mounted at ``/signals``.
"""

"""Integrations with web frameworks, each in its own module and optional extra.

``gaesignals.contrib.flask`` (``pip install 'gaesignals[flask]'``) and
``gaesignals.contrib.django`` (``pip install 'gaesignals[django]'``); importing ``gaesignals``
imports neither framework.
"""

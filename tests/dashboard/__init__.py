"""The dashboard (:mod:`gaesignals.dashboard`) through WSGI."""

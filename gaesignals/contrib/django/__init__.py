"""Django integration: an app (``"gaesignals.contrib.django"`` in ``INSTALLED_APPS``), its
middleware, the ``deliver_signals`` management command, a cron view, and :class:`AsyncSignal`
(in ``gaesignals.contrib.django.signals``), a drop-in for ``django.dispatch.Signal`` whose
``send`` defers.

Settings live in one dict, ``GAESIGNALS`` (see :mod:`.apps`). Nothing here is imported by
``import gaesignals``.
"""

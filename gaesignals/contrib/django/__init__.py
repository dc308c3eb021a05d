"""Django integration: an app (``"gaesignals.contrib.django"`` in ``INSTALLED_APPS``), its
middleware, the ``deliver_signals`` management command, a cron view, and :class:`AsyncSignal`
(in ``gaesignals.contrib.django.signals``), a drop-in for ``django.dispatch.Signal`` whose
``send`` defers; on Django 6, a ``django.tasks`` backend (``gaesignals.contrib.django.tasks``)
whose queues are signals.

Settings live in one dict, ``GAESIGNALS`` (see :mod:`.apps`). Nothing here is imported by
``import gaesignals``.
"""

from ..._extras import check

check("django")  # every module here needs Django: say what to install, once (without importing it)

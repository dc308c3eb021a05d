from django.urls import path

from examples.django_app.guestbook import views
from gaesignals.browser import Bridge
from gaesignals.browser.frameworks import django as signals_django
from gaesignals.contrib.django.views import deliver_signals

#: The browser bridge, served as a view below /signals/ (it checks its own CSRF token).
bridge = Bridge(prefix="/signals", identify=signals_django.identify)

urlpatterns = [
    path("", views.index, name="index"),
    path("sign", views.sign, name="sign"),
    path("tasks/deliver-signals", deliver_signals),
    path("signals/<path:rest>", signals_django.view(bridge)),
]

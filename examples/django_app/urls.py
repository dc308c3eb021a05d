from django.urls import path

from examples.django_app.guestbook import views
from gaesignals.contrib.django.views import deliver_signals

urlpatterns = [
    path("", views.index, name="index"),
    path("sign", views.sign, name="sign"),
    path("tasks/deliver-signals", deliver_signals),
]

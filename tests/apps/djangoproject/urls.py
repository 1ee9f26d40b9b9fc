from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("", views.hello),
    path("echo", views.echo_length),
    path("info/<int:number>", views.info),
    path("boom", views.boom),
]

from django.urls import path
from django.views.generic import RedirectView

from . import views

app_name = "diagnosis"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="diagnosis:upload"), name="home"),
    path("upload/", views.upload, name="upload"),
    path("history/", views.history, name="history"),
    path("predictions/<int:pk>/", views.result, name="result"),
    path("predictions/<int:pk>/retry/", views.retry, name="retry"),
]

from django.urls import path, register_converter
from django.views.generic import RedirectView

from . import converters, views

register_converter(converters.IdConverter, "id")

app_name = "diagnosis"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="diagnosis:upload"), name="home"),
    path("upload/", views.upload, name="upload"),
    path("history/", views.history, name="history"),
    path("queue/", views.queue, name="queue"),
    path("lesions/", views.lesion_list, name="lesions"),
    path("lesions/<id:pk>/", views.lesion_detail, name="lesion"),
    path("predictions/<id:pk>/", views.result, name="result"),
    path("predictions/<id:pk>/retry/", views.retry, name="retry"),
    path("predictions/<id:pk>/review/", views.review, name="review"),
]

from django.urls import path
from django.views.generic import RedirectView

from . import converters, performance_views, views  # noqa: F401 (converters registers <id:...>)

app_name = "diagnosis"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="diagnosis:upload"), name="home"),
    path("upload/", views.upload, name="upload"),
    path("history/", views.history, name="history"),
    path("queue/", views.queue, name="queue"),
    path("lesions/", views.lesion_list, name="lesions"),
    path("lesions/<id:pk>/", views.lesion_detail, name="lesion"),
    path("lesions/<id:pk>/pin/", views.place_pin, name="pin"),
    path("lesions/<id:pk>/letter.pdf", views.lesion_letter, name="letter"),
    path("predictions/<id:pk>/", views.result, name="result"),
    path("predictions/<id:pk>/retry/", views.retry, name="retry"),
    path("predictions/<id:pk>/review/", views.review, name="review"),
    path(
        "predictions/<id:pk>/final-diagnosis/",
        performance_views.prediction_final_diagnosis,
        name="prediction_final_diagnosis",
    ),
    path("lesions/<id:pk>/final-diagnosis/", performance_views.final_diagnosis, name="final_diagnosis"),
    path("performance/", performance_views.performance_page, name="performance"),
    path("performance/confirmed-cases.csv", performance_views.performance_csv, name="performance_csv"),
]

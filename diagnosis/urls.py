from django.urls import path
from django.views.generic import RedirectView

from . import performance_views, views

app_name = "diagnosis"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="diagnosis:upload"), name="home"),
    path("upload/", views.upload, name="upload"),
    path("history/", views.history, name="history"),
    path("queue/", views.queue, name="queue"),
    path("lesions/", views.lesion_list, name="lesions"),
    path("lesions/<int:pk>/", views.lesion_detail, name="lesion"),
    path("lesions/<int:pk>/pin/", views.place_pin, name="pin"),
    path("lesions/<int:pk>/letter.pdf", views.lesion_letter, name="letter"),
    path("predictions/<int:pk>/", views.result, name="result"),
    path("predictions/<int:pk>/retry/", views.retry, name="retry"),
    path("predictions/<int:pk>/review/", views.review, name="review"),
    path("predictions/<int:pk>/final-diagnosis/", performance_views.prediction_final_diagnosis,
         name="prediction_final_diagnosis"),
    path("lesions/<int:pk>/final-diagnosis/", performance_views.final_diagnosis, name="final_diagnosis"),
    path("performance/", performance_views.performance_page, name="performance"),
    path("performance/confirmed-cases.csv", performance_views.performance_csv, name="performance_csv"),
]

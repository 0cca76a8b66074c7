from django.urls import path
from rest_framework.routers import DefaultRouter

from .api import PredictionViewSet, lesion_letter
from .performance_api import LesionOutcomeView, PerformanceView, PredictionFhirView

router = DefaultRouter(trailing_slash=True)
router.register("predictions", PredictionViewSet, basename="prediction")

urlpatterns = [
    path("lesions/<int:pk>/outcome/", LesionOutcomeView.as_view(), name="lesion-outcome"),
    path("performance/", PerformanceView.as_view(), name="performance"),
    path("predictions/<int:pk>/fhir/", PredictionFhirView.as_view(), name="prediction-fhir"),
    path("lesions/<int:pk>/letter.pdf", lesion_letter, name="api-lesion-letter"),
    *router.urls,
]

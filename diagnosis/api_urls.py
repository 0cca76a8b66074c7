from django.urls import path
from rest_framework.routers import DefaultRouter

from . import converters  # noqa: F401 (registers <id:...>)
from .api import PredictionViewSet, lesion_letter
from .performance_api import LesionOutcomeView, PerformanceView, PredictionFhirView

router = DefaultRouter(trailing_slash=True)
router.register("predictions", PredictionViewSet, basename="prediction")

urlpatterns = [
    path("lesions/<id:pk>/outcome/", LesionOutcomeView.as_view(), name="lesion-outcome"),
    path("performance/", PerformanceView.as_view(), name="performance"),
    path("predictions/<id:pk>/fhir/", PredictionFhirView.as_view(), name="prediction-fhir"),
    path("lesions/<id:pk>/letter.pdf", lesion_letter, name="api-lesion-letter"),
    *router.urls,
]

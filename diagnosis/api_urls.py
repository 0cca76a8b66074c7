from django.urls import path
from rest_framework.routers import DefaultRouter

from .api import PredictionViewSet, lesion_letter

router = DefaultRouter(trailing_slash=True)
router.register("predictions", PredictionViewSet, basename="prediction")

urlpatterns = [
    path("lesions/<int:pk>/letter.pdf", lesion_letter, name="api-lesion-letter"),
    *router.urls,
]

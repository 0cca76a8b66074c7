from rest_framework.routers import DefaultRouter

from .api import PredictionViewSet

router = DefaultRouter(trailing_slash=True)
router.register("predictions", PredictionViewSet, basename="prediction")

urlpatterns = router.urls

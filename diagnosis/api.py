"""JSON API: POST /api/predictions/ (multipart), GET /api/predictions/[<id>/].

Authenticated by token (`Authorization: Token ...`, from `manage.py drf_create_token`)
or by the site's session. Input is checked by the same UploadForm as the upload
page; the work is done by the same services. Uploads and detail reads are written
to the audit trail.
"""
from __future__ import annotations

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.shortcuts import get_object_or_404
from django.urls import reverse
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import api_view
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from . import selectors, services
from .audit import Via
from .forms import UploadForm
from .models import Prediction


class PredictionSerializer(serializers.ModelSerializer):
    # `status` is the state of the prediction (done / refused / no_model / failed / pending);
    # `outcome` is what the clinician reads (needs_doctor / uncertain / low_risk / not_assessed);
    # `label` is null, and `reason` says why, until the model has assessed the image.
    label = serializers.SerializerMethodField()
    reason = serializers.SerializerMethodField()
    heatmap_url = serializers.SerializerMethodField()
    lesion = serializers.SerializerMethodField()
    verdict = serializers.CharField(source="get_outcome_display")
    message = serializers.CharField()
    next_step = serializers.CharField()
    boundary_note = serializers.CharField()
    image_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()
    patient_ref = serializers.CharField(source="upload.patient_ref")
    body_site = serializers.CharField(source="upload.body_site")
    note = serializers.CharField(source="upload.note")
    uploaded_by = serializers.CharField(source="upload.uploaded_by.get_username")
    review = serializers.SerializerMethodField()
    final_diagnosis = serializers.SerializerMethodField()  # the lesion's, when recorded (docs/performance.md)

    class Meta:
        model = Prediction
        fields = [
            "id",
            "status",
            "message",
            "outcome",
            "verdict",
            "next_step",
            "label",
            "probability_malignant",
            "threshold",
            "uncertain_threshold",
            "near_boundary",
            "views_averaged",
            "boundary_note",
            "reason",
            "model_version",
            "elapsed_ms",
            "created_at",
            "predicted_at",
            "image_url",
            "thumbnail_url",
            "heatmap_url",
            "patient_ref",
            "lesion",
            "body_site",
            "note",
            "uploaded_by",
            "review",
            "final_diagnosis",
        ]
        read_only_fields = fields

    def get_label(self, prediction: Prediction) -> str | None:
        return prediction.label or None

    def get_reason(self, prediction: Prediction) -> str | None:
        return None if prediction.is_assessed else (prediction.reason or prediction.message)

    def get_heatmap_url(self, prediction: Prediction) -> str | None:
        return self.absolute(prediction.heatmap.url) if prediction.heatmap else None

    def get_lesion(self, prediction: Prediction) -> dict | None:
        lesion = prediction.upload.lesion
        if lesion is None:
            return None
        pin = ({"view": lesion.map_view, "x": lesion.map_x, "y": lesion.map_y, "site": lesion.pin_site}
               if lesion.has_pin else None)
        return {"id": lesion.pk, "name": lesion.name, "patient_ref": lesion.patient_ref, "pin": pin,
                "letter_url": self.absolute(reverse("api-lesion-letter", args=[lesion.pk]))}

    def absolute(self, url: str) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request else url

    def get_image_url(self, prediction: Prediction) -> str:
        return self.absolute(prediction.upload.image.url)

    def get_thumbnail_url(self, prediction: Prediction) -> str | None:
        thumbnail = prediction.upload.thumbnail
        return self.absolute(thumbnail.url) if thumbnail else None

    def get_final_diagnosis(self, prediction: Prediction) -> dict | None:
        from .performance_api import final_diagnosis_json

        lesion = prediction.upload.lesion
        return final_diagnosis_json(getattr(lesion, "final_diagnosis", None)) if lesion is not None else None

    def get_review(self, prediction: Prediction) -> dict:
        return {
            "reviewed": prediction.is_reviewed,
            "decision": prediction.review_decision or None,
            "comment": prediction.review_comment,
            "reviewed_by": prediction.reviewed_by.get_username() if prediction.reviewed_by else None,
            "reviewed_at": serializers.DateTimeField().to_representation(prediction.reviewed_at)
            if prediction.reviewed_at
            else None,
        }


class PredictionViewSet(mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = PredictionSerializer
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):
        """Filters for the list: ?patient_ref= (exactly), ?lesion=<id>, ?outcome=."""
        params = self.request.query_params
        lesion = params.get("lesion", "")
        outcome = params.get("outcome", "")
        if outcome and outcome != "attention" and outcome not in Prediction.Outcome.values:
            # An unknown filter value must not quietly return everything.
            raise serializers.ValidationError(
                {"outcome": [f"Unknown outcome {outcome!r}: use one of {', '.join(Prediction.Outcome.values)}."]})
        if lesion and not lesion.isdigit():
            raise serializers.ValidationError({"lesion": ["The lesion filter takes a lesion id (a number)."]})
        return selectors.history(
            self.request.user,
            patient=params.get("patient_ref", ""),
            lesion=int(lesion) if lesion.isdigit() else None,
            outcome=outcome,
        )

    def retrieve(self, request, *args, **kwargs):
        prediction = self.get_object()
        services.note_viewed(request.user, prediction, via=Via.API)
        return Response(self.get_serializer(prediction).data)

    def create(self, request, *args, **kwargs):
        form = UploadForm(request.data, request.FILES)
        if not form.is_valid():
            errors = {field: [str(message) for message in messages] for field, messages in form.errors.items()}
            return Response(errors, status=status.HTTP_400_BAD_REQUEST)
        prediction = services.submit_upload(uploaded_by=request.user, via=Via.API, **form.cleaned_data)
        # 201 even when the model could not assess it: the upload is stored, `outcome` and `reason` say why.
        return Response(self.get_serializer(prediction).data, status=status.HTTP_201_CREATED)


@api_view(["GET"])
def lesion_letter(request, pk: int):
    """GET /api/lesions/<id>/letter.pdf: the lesion's referral letter (the same PDF as its page's link)."""
    from .views import letter_response

    lesion = get_object_or_404(selectors.visible_lesions(request.user), pk=pk)
    return letter_response(request, lesion, via=Via.API)


def exception_handler(exc, context):
    """DRF's handler, plus JSON (not an HTML 400 or a 500) for bodies Django refuses."""
    response = drf_exception_handler(exc, context)
    if response is not None:
        return response
    if isinstance(exc, RequestDataTooBig):
        return Response(
            {"detail": "The request body is too large. Send the photo as multipart form data in the 'image' field."},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, SuspiciousOperation):
        return Response({"detail": f"The request was refused: {exc}"}, status=status.HTTP_400_BAD_REQUEST)
    return None

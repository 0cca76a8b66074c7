"""JSON API: POST /api/predictions/ (multipart), GET /api/predictions/[<id>/].

Authenticated by token (`Authorization: Token ...`, from `manage.py drf_create_token`)
or by the site's session. Input is checked by the same UploadForm as the upload
page; the work is done by the same services. Uploads and detail reads are written
to the audit trail.
"""

from __future__ import annotations

import logging

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import api_view
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from ml.serving.heatmap import HEATMAP_METHODS

from . import selectors, services
from .audit import Via
from .final_diagnoses import final_diagnosis_json
from .forms import UploadForm
from .models import BodySite, Prediction
from .reasons import public_reason
from .storage import StorageUnavailable
from .validators import MAX_ID, parse_id

logger = logging.getLogger(__name__)


class LesionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    patient_ref = serializers.CharField()


class ReviewSerializer(serializers.Serializer):
    reviewed = serializers.BooleanField()
    decision = serializers.ChoiceField(choices=Prediction.Decision.choices, allow_null=True)
    comment = serializers.CharField(allow_blank=True)
    reviewed_by = serializers.CharField(allow_null=True)
    reviewed_at = serializers.DateTimeField(allow_null=True)


class PredictionSerializer(serializers.ModelSerializer):
    # `status` is the state of the prediction (done / refused / no_model / failed / pending);
    # `outcome` is what the clinician reads (needs_doctor / uncertain / low_risk / not_assessed);
    # `label` is null, and `reason` says why, until the model has assessed the image.
    label = serializers.SerializerMethodField()
    reason = serializers.SerializerMethodField()
    heatmap_url = serializers.SerializerMethodField()
    heatmap_method = serializers.SerializerMethodField()
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
            "heatmap_method",
            "patient_ref",
            "lesion",
            "body_site",
            "note",
            "uploaded_by",
            "review",
            "final_diagnosis",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ChoiceField(choices=Prediction.Label.choices, allow_null=True))
    def get_label(self, prediction: Prediction) -> str | None:
        return prediction.label or None

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_reason(self, prediction: Prediction) -> str | None:
        # public_reason again: rows written before reasons were cleaned of server paths
        return None if prediction.is_assessed else (public_reason(prediction.reason) or prediction.message)

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_heatmap_url(self, prediction: Prediction) -> str | None:
        return self.absolute(prediction.heatmap.url) if prediction.heatmap else None

    @extend_schema_field(serializers.ChoiceField(choices=list(HEATMAP_METHODS), allow_null=True))
    def get_heatmap_method(self, prediction: Prediction) -> str | None:
        return prediction.heatmap_method if prediction.heatmap else None

    @extend_schema_field(LesionSerializer(allow_null=True))
    def get_lesion(self, prediction: Prediction) -> dict | None:
        lesion = prediction.upload.lesion
        if lesion is None:
            return None
        pin = (
            {"view": lesion.map_view, "x": lesion.map_x, "y": lesion.map_y, "site": lesion.pin_site}
            if lesion.has_pin
            else None
        )
        return {
            "id": lesion.pk,
            "name": lesion.name,
            "patient_ref": lesion.patient_ref,
            "pin": pin,
            "letter_url": self.absolute(reverse("api-lesion-letter", args=[lesion.pk])),
        }

    def absolute(self, url: str) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request else url

    @extend_schema_field(serializers.URLField())
    def get_image_url(self, prediction: Prediction) -> str:
        return self.absolute(prediction.upload.image.url)

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_thumbnail_url(self, prediction: Prediction) -> str | None:
        thumbnail = prediction.upload.thumbnail
        return self.absolute(thumbnail.url) if thumbnail else None

    def get_final_diagnosis(self, prediction: Prediction) -> dict | None:
        lesion = prediction.upload.lesion
        return final_diagnosis_json(getattr(lesion, "final_diagnosis", None)) if lesion is not None else None

    @extend_schema_field(ReviewSerializer())
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


class UploadRequestSerializer(serializers.Serializer):
    """The upload's fields, for the schema: UploadForm checks them (the same words as the page)."""

    image = serializers.FileField(help_text="The photo: JPEG, PNG, BMP or WebP (the bytes decide, not the name).")
    patient_ref = serializers.RegexField(
        r"^[A-Za-z0-9][A-Za-z0-9._/-]*$",
        max_length=64,
        required=False,
        help_text="The pseudonymous patient reference, never the patient's name.",
    )
    body_site = serializers.ChoiceField(choices=BodySite.choices, required=False)
    note = serializers.CharField(max_length=2000, required=False)
    lesion = serializers.IntegerField(
        min_value=1, max_value=MAX_ID, required=False, help_text="Id of a lesion followed over time."
    )
    lesion_name = serializers.CharField(max_length=100, required=False, help_text="Name a new (or existing) lesion.")


# Every error is JSON: {"detail": "..."} or, for refused input, {"field": ["message", ...]}.
DETAIL = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
FIELD_ERRORS = {
    "type": "object",
    "description": "Each refused field (or 'non_field_errors') with its messages.",
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
}
COMMON_ERRORS = {
    401: OpenApiResponse(DETAIL, description="No or bad credentials (WWW-Authenticate: Token)."),
    403: OpenApiResponse(DETAIL, description="Signed in, but not allowed (e.g. a session call without a CSRF token)."),
    429: OpenApiResponse(
        DETAIL, description="Too many calls (SKINCARE_API_THROTTLE_*); Retry-After says when to retry."
    ),
    500: OpenApiResponse(DETAIL, description="An unexpected server error (logged); still JSON."),
}
ID_PARAMETER = OpenApiParameter(
    "id",
    OpenApiTypes.INT,
    OpenApiParameter.PATH,
    description="The prediction's id (a larger number than the "
    "database holds answers 404 like any id that names nothing).",
)


class PredictionViewSet(
    mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    serializer_class = PredictionSerializer
    parser_classes = [MultiPartParser, FormParser]
    lookup_value_regex = "[^/]+"  # checked by get_object: anything but a database id is a JSON 404

    @extend_schema(
        summary="The clinic's predictions, newest first",
        parameters=[
            OpenApiParameter("patient_ref", str, description="Exactly this patient reference."),
            OpenApiParameter(
                "lesion",
                {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                description="Only this lesion's photos (a lesion id).",
            ),
            OpenApiParameter(
                "outcome",
                str,
                enum=["attention", *Prediction.Outcome.values],
                description="Only this outcome; 'attention': needs a doctor or uncertain.",
            ),
        ],
        responses={
            200: PredictionSerializer(many=True),
            400: OpenApiResponse(FIELD_ERRORS, description="A filter that is not valid (named in the answer)."),
            404: OpenApiResponse(DETAIL, description="A page number past the last page."),
            **COMMON_ERRORS,
        },
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    def get_queryset(self):
        """Filters for the list: ?patient_ref= (exactly), ?lesion=<id>, ?outcome=."""
        params = self.request.query_params
        repeated = sorted(name for name in ("patient_ref", "lesion", "outcome") if len(params.getlist(name)) > 1)
        if repeated:  # which of the values would count? Neither: say so
            raise serializers.ValidationError({name: ["Give this filter once."] for name in repeated})
        lesion = params.get("lesion", "")
        outcome = params.get("outcome", "")
        if outcome and outcome != "attention" and outcome not in Prediction.Outcome.values:
            # An unknown filter value must not quietly return everything.
            raise serializers.ValidationError(
                {"outcome": [f"Unknown outcome {outcome!r}: use one of {', '.join(Prediction.Outcome.values)}."]}
            )
        if lesion and parse_id(lesion) is None:
            raise serializers.ValidationError(
                {"lesion": ["The lesion filter takes a lesion id (a whole number from 1 to 9223372036854775807)."]}
            )
        return selectors.history(
            self.request.user,
            patient=params.get("patient_ref", ""),
            lesion=parse_id(lesion) if lesion else None,
            outcome=outcome,
        )

    def get_object(self):
        if parse_id(self.kwargs.get(self.lookup_field, "")) is None:
            raise Http404("No such prediction.")
        return super().get_object()

    @extend_schema(
        summary="One prediction (the view is written to the audit trail)",
        parameters=[ID_PARAMETER],
        responses={
            200: PredictionSerializer,
            404: OpenApiResponse(DETAIL, description="No such prediction."),
            **COMMON_ERRORS,
        },
    )
    def retrieve(self, request, *args, **kwargs):
        prediction = self.get_object()
        services.note_viewed(request.user, prediction, via=Via.API)
        return Response(self.get_serializer(prediction).data)

    @extend_schema(
        summary="Upload a photo and get the model's answer",
        request={"multipart/form-data": UploadRequestSerializer},
        responses={
            201: OpenApiResponse(
                PredictionSerializer,
                description="Stored; `outcome` and `reason` say whether the "
                "model assessed it (201 even when it could not: the upload is kept).",
            ),
            400: OpenApiResponse(FIELD_ERRORS, description="A field refused, with a message for the uploader."),
            413: OpenApiResponse(DETAIL, description="The request body is too large."),
            415: OpenApiResponse(DETAIL, description="Not multipart or form data."),
            503: OpenApiResponse(
                DETAIL, description="The image storage is not writable or is full: nothing was stored."
            ),
            **COMMON_ERRORS,
        },
    )
    def create(self, request, *args, **kwargs):
        form = UploadForm(request.data, request.FILES)
        if not form.is_valid():
            errors = {field: [str(message) for message in messages] for field, messages in form.errors.items()}
            return Response(errors, status=status.HTTP_400_BAD_REQUEST)
        prediction = services.submit_upload(uploaded_by=request.user, via=Via.API, **form.cleaned_data)
        # 201 even when the model could not assess it: the upload is stored, `outcome` and `reason` say why.
        return Response(self.get_serializer(prediction).data, status=status.HTTP_201_CREATED)


@extend_schema(
    summary="A lesion's referral letter (PDF; audited)",
    parameters=[OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The lesion's id.")],
    responses={
        (200, "application/pdf"): OpenApiTypes.BINARY,
        404: OpenApiResponse(DETAIL, description="No such lesion (or not yours to see)."),
        **COMMON_ERRORS,
    },
)
@api_view(["GET"])
def lesion_letter(request, pk: int):
    """GET /api/lesions/<id>/letter.pdf: the lesion's referral letter (the same PDF as its page's link)."""
    from .views import letter_response

    lesion = get_object_or_404(selectors.visible_lesions(request.user), pk=pk)
    return letter_response(request, lesion, via=Via.API)


def exception_handler(exc, context):
    """DRF's handler, plus JSON for everything else: bodies Django refuses (400, 413), a
    storage that cannot be written (503), and anything unforeseen (500, logged)."""
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
    if isinstance(exc, DjangoValidationError):  # a service refused the input: say why
        return Response({"non_field_errors": list(exc.messages)}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, StorageUnavailable):
        return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "60"})
    view = context.get("view")
    logger.error("Unexpected error in %s", type(view).__name__ if view else "the API", exc_info=exc)
    return Response(
        {
            "detail": "An unexpected error occurred on the server; it has been logged. Try again, and tell the "
            "site's administrator if it persists."
        },
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )

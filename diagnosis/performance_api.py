"""JSON API that closes the loop:

- GET/POST /api/lesions/<id>/outcome/  the lesion's final diagnosis (POST: a reviewer records or changes it)
- GET /api/performance/?start=&end=    the performance page's figures as JSON (reviewers)
- GET /api/predictions/<id>/fhir/      one prediction as a FHIR Bundle (application/fhir+json)

Same authentication as the rest of the API (token or session), the same form as the
page, the same services; exports are written to the audit trail.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import PermissionDenied
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from . import audit, performance, selectors
from .api import COMMON_ERRORS, DETAIL, FIELD_ERRORS
from .final_diagnoses import final_diagnosis_json, may_record, record_final_diagnosis
from .final_diagnosis_forms import FinalDiagnosisForm
from .models import FinalDiagnosis

LESION_ID = OpenApiParameter(
    "id",
    OpenApiTypes.INT,
    OpenApiParameter.PATH,
    description="The lesion's id (a larger number than the database holds answers 404).",
)
PREDICTION_ID = OpenApiParameter(
    "id",
    OpenApiTypes.INT,
    OpenApiParameter.PATH,
    description="The prediction's id (a larger number than the database holds answers 404).",
)
FINAL_DIAGNOSIS = {
    "type": "object",
    "properties": {
        "lesion": {"type": "integer"},
        "diagnosis": {"type": "string", "enum": FinalDiagnosis.Diagnosis.values},
        "diagnosis_display": {"type": "string"},
        "malignant": {"type": "boolean"},
        "method": {"type": "string", "enum": FinalDiagnosis.Method.values},
        "method_display": {"type": "string"},
        "diagnosed_on": {"type": "string", "format": "date"},
        "comment": {"type": "string"},
        "recorded_by": {"type": "string"},
        "recorded_at": {"type": "string", "format": "date-time"},
    },
    "required": ["lesion", "diagnosis", "malignant", "method", "diagnosed_on", "comment"],
}
LESION_OUTCOME = {
    "type": "object",
    "properties": {"lesion": {"type": "integer"}, "final_diagnosis": {**FINAL_DIAGNOSIS, "nullable": True}},
    "required": ["lesion", "final_diagnosis"],
}
OUTCOME_REQUEST = {
    "type": "object",
    "properties": {
        "diagnosis": {"type": "string", "enum": FinalDiagnosis.Diagnosis.values},
        "method": {"type": "string", "enum": FinalDiagnosis.Method.values},
        "diagnosed_on": {"type": "string", "format": "date", "description": "YYYY-MM-DD, not in the future"},
        "comment": {"type": "string", "description": "Required for 'other' diagnoses."},
    },
    "required": ["diagnosis", "method", "diagnosed_on"],
}
NOT_FOUND = OpenApiResponse(DETAIL, description="No such lesion or prediction (or not yours to see).")


def _require_reviewer(user) -> None:
    if not may_record(user):
        raise PermissionDenied("Only a reviewer (the permission to review predictions) may do this.")


class LesionOutcomeView(APIView):
    """A lesion's final diagnosis. POST fields: diagnosis, method, diagnosed_on (YYYY-MM-DD), comment."""

    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema(
        summary="A lesion's final diagnosis (null where none is recorded)",
        parameters=[LESION_ID],
        responses={200: LESION_OUTCOME, 404: NOT_FOUND, **COMMON_ERRORS},
    )
    def get(self, request, pk: int):
        lesion = get_object_or_404(selectors.visible_lesions(request.user), pk=pk)
        final = FinalDiagnosis.objects.filter(lesion=lesion).select_related("recorded_by").first()
        return Response({"lesion": lesion.pk, "final_diagnosis": final_diagnosis_json(final)})

    @extend_schema(
        summary="Record or change a lesion's final diagnosis (reviewers; audited)",
        parameters=[LESION_ID],
        request={
            "application/json": OUTCOME_REQUEST,
            "application/x-www-form-urlencoded": OUTCOME_REQUEST,
            "multipart/form-data": OUTCOME_REQUEST,
        },
        responses={
            201: OpenApiResponse(LESION_OUTCOME, description="Recorded."),
            200: OpenApiResponse(LESION_OUTCOME, description="Changed (the audit trail keeps the previous)."),
            400: OpenApiResponse(FIELD_ERRORS, description="A field refused, with the reason in words."),
            404: NOT_FOUND,
            **COMMON_ERRORS,
        },
    )
    def post(self, request, pk: int):
        _require_reviewer(request.user)
        lesion = get_object_or_404(selectors.visible_lesions(request.user), pk=pk)
        if not isinstance(request.data, dict):
            return Response(
                {"detail": "Send the final diagnosis as an object: diagnosis, method, diagnosed_on, comment."},
                status=status.HTTP_400_BAD_REQUEST,
            )
        form = FinalDiagnosisForm(request.data)
        if not form.is_valid():
            errors = {field: [str(message) for message in messages] for field, messages in form.errors.items()}
            return Response(errors, status=status.HTTP_400_BAD_REQUEST)
        existed = FinalDiagnosis.objects.filter(lesion=lesion).exists()
        final = record_final_diagnosis(lesion, recorded_by=request.user, via=audit.Via.API, **form.cleaned_data)
        return Response(
            {"lesion": lesion.pk, "final_diagnosis": final_diagnosis_json(final)},
            status=status.HTTP_200_OK if existed else status.HTTP_201_CREATED,
        )


class PerformanceView(APIView):
    """The figures of the performance page. ?start=YYYY-MM-DD&end=YYYY-MM-DD (upload dates)."""

    @extend_schema(
        summary="The performance page's figures on confirmed cases (reviewers)",
        parameters=[
            OpenApiParameter("start", OpenApiTypes.DATE, description="First upload date (YYYY-MM-DD)."),
            OpenApiParameter("end", OpenApiTypes.DATE, description="Last upload date (YYYY-MM-DD)."),
        ],
        responses={
            200: OpenApiResponse({"type": "object"}, description="docs/performance.md says what each figure is."),
            400: OpenApiResponse(DETAIL, description="A date that cannot be read, or an end before the start."),
            **COMMON_ERRORS,
        },
    )
    def get(self, request):
        _require_reviewer(request.user)
        given = {name: request.query_params.get(name) for name in ("start", "end")}
        empty = [name for name, value in given.items() if value is not None and not value.strip()]
        if empty:  # the page's form sends empty fields; an API call leaves a filter out instead
            return Response(
                {"detail": f"Give {' and '.join(empty)} as a date (YYYY-MM-DD), or leave it out."},
                status=status.HTTP_400_BAD_REQUEST,
            )
        try:
            start, end = performance.parse_period(given["start"] or "", given["end"] or "")
        except ValidationError as exc:
            return Response({"detail": " ".join(exc.messages)}, status=status.HTTP_400_BAD_REQUEST)
        report = performance.build_report(selectors.visible_predictions(request.user), start=start, end=end)
        return Response(performance.report_as_json(report))


class PredictionFhirView(APIView):
    """One prediction (with its photo, the model, the review and the lesion's final
    diagnosis) as a FHIR Bundle."""

    @extend_schema(
        summary="One prediction as a FHIR R4 Bundle (audited)",
        parameters=[PREDICTION_ID],
        responses={
            (200, "application/fhir+json"): OpenApiResponse(
                {
                    "type": "object",
                    "properties": {"resourceType": {"type": "string", "enum": ["Bundle"]}},
                    "required": ["resourceType"],
                },
                description="A Bundle of type collection.",
            ),
            404: NOT_FOUND,
            **COMMON_ERRORS,
        },
    )
    def get(self, request, pk: int):
        # fhir.resources (pydantic): loaded by the first export, not by every worker.
        from . import fhir

        prediction = get_object_or_404(selectors.visible_predictions(request.user), pk=pk)
        body = fhir.prediction_bundle_json(prediction, request=request)
        audit.record(request.user, audit.Action.EXPORT, prediction, via=audit.Via.API, format="FHIR Bundle")
        return HttpResponse(body, content_type="application/fhir+json")

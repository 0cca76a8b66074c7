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
from rest_framework import status
from rest_framework.exceptions import PermissionDenied
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from . import audit, performance, selectors
from .final_diagnoses import may_record, record_final_diagnosis
from .final_diagnosis_forms import FinalDiagnosisForm
from .models import FinalDiagnosis


def final_diagnosis_json(final: FinalDiagnosis | None) -> dict | None:
    if final is None:
        return None
    return {
        "lesion": final.lesion_id,
        "diagnosis": final.diagnosis,
        "diagnosis_display": final.get_diagnosis_display(),
        "malignant": final.is_malignant,
        "method": final.method,
        "method_display": final.get_method_display(),
        "diagnosed_on": final.diagnosed_on.isoformat(),
        "comment": final.comment,
        "recorded_by": final.recorded_by.get_username(),
        "recorded_at": final.recorded_at.isoformat(),
    }


def _require_reviewer(user) -> None:
    if not may_record(user):
        raise PermissionDenied("Only a reviewer (the permission to review predictions) may do this.")


class LesionOutcomeView(APIView):
    """A lesion's final diagnosis. POST fields: diagnosis, method, diagnosed_on (YYYY-MM-DD), comment."""

    parser_classes = [JSONParser, FormParser, MultiPartParser]

    def get(self, request, pk: int):
        lesion = get_object_or_404(selectors.visible_lesions(request.user), pk=pk)
        final = FinalDiagnosis.objects.filter(lesion=lesion).select_related("recorded_by").first()
        return Response({"lesion": lesion.pk, "final_diagnosis": final_diagnosis_json(final)})

    def post(self, request, pk: int):
        _require_reviewer(request.user)
        lesion = get_object_or_404(selectors.visible_lesions(request.user), pk=pk)
        if not isinstance(request.data, dict):
            return Response({"detail": "Send the final diagnosis as an object: diagnosis, method, diagnosed_on, "
                                       "comment."}, status=status.HTTP_400_BAD_REQUEST)
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

    def get(self, request):
        _require_reviewer(request.user)
        try:
            start, end = performance.parse_period(request.query_params.get("start", ""),
                                                  request.query_params.get("end", ""))
        except ValidationError as exc:
            return Response({"detail": " ".join(exc.messages)}, status=status.HTTP_400_BAD_REQUEST)
        report = performance.build_report(selectors.visible_predictions(request.user), start=start, end=end)
        return Response(performance.report_as_json(report))


class PredictionFhirView(APIView):
    """One prediction (with its photo, the model, the review and the lesion's final
    diagnosis) as a FHIR Bundle."""

    def get(self, request, pk: int):
        # fhir.resources (pydantic): loaded by the first export, not by every worker.
        from . import fhir

        prediction = get_object_or_404(selectors.visible_predictions(request.user), pk=pk)
        body = fhir.prediction_bundle_json(prediction, request=request)
        audit.record(request.user, audit.Action.EXPORT, prediction, via=audit.Via.API, format="FHIR Bundle")
        return HttpResponse(body, content_type="application/fhir+json")

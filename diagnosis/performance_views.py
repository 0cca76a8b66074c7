"""The pages that close the loop: a lesion's final diagnosis, and how the model performs
on the clinic's confirmed cases (with its CSV export).

Thin, like views.py: they read through selectors and diagnosis/performance.py and
write through diagnosis/final_diagnoses.py. Recording a final diagnosis and reading
the performance figures take the reviewer's permission.
"""

from __future__ import annotations

import base64

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from . import audit, performance, selectors, services
from .final_diagnoses import follow_as_lesion, may_record, record_final_diagnosis
from .final_diagnosis_forms import FinalDiagnosisForm
from .models import AuditEvent, FinalDiagnosis


def _require_reviewer(user) -> None:
    if not may_record(user):
        raise PermissionDenied("Only a reviewer may do this.")


@require_http_methods(["GET", "POST"])
def final_diagnosis(request, pk: int):
    """What the lesion turned out to be: everyone may read it, a reviewer records or changes it."""
    lesion = get_object_or_404(selectors.visible_lesions(request.user), pk=pk)
    current = FinalDiagnosis.objects.filter(lesion=lesion).select_related("recorded_by").first()
    if request.method == "POST":
        _require_reviewer(request.user)
        form = FinalDiagnosisForm(request.POST)
        if form.is_valid():
            record_final_diagnosis(lesion, recorded_by=request.user, via=audit.Via.PAGE, **form.cleaned_data)
            messages.success(
                request,
                f"Final diagnosis recorded for {lesion.name}: "
                f"{FinalDiagnosis.Diagnosis(form.cleaned_data['diagnosis']).label}.",
            )
            return redirect("diagnosis:final_diagnosis", pk=lesion.pk)
    else:
        services.note_viewed(request.user, lesion, via=audit.Via.PAGE, page="final diagnosis")
        initial = {"diagnosed_on": timezone.localdate()}
        if current is not None:
            initial = {
                "diagnosis": current.diagnosis,
                "method": current.method,
                "diagnosed_on": current.diagnosed_on,
                "comment": current.comment,
            }
        form = FinalDiagnosisForm(initial=initial)
    changes = audit.events_for(lesion).filter(action=AuditEvent.Action.FINAL_DIAGNOSIS).order_by("-at", "-id")
    return render(
        request,
        "diagnosis/final_diagnosis.html",
        {
            "lesion": lesion,
            "current": current,
            "form": form,
            "may_record": may_record(request.user),
            "visits": selectors.lesion_visits(request.user, lesion),
            "changes": [(event, _labelled(event.details)) for event in changes],
        },
    )


@require_http_methods(["GET", "POST"])
def prediction_final_diagnosis(request, pk: int):
    """The result page's way to the final diagnosis. A photo of a lesion goes to the lesion's
    page; a photo uploaded without one is first named as a lesion of its patient (a new
    one, or one of the patient's lesions), since a final diagnosis belongs to a lesion."""
    prediction = get_object_or_404(selectors.visible_predictions(request.user), pk=pk)
    upload = prediction.upload
    if upload.lesion_id is not None:
        return redirect("diagnosis:final_diagnosis", pk=upload.lesion_id)
    error = ""
    if request.method == "POST":
        _require_reviewer(request.user)
        name = " ".join(request.POST.get("lesion_name", "").split())
        if not name:
            error = 'Name the lesion, e.g. "left shoulder, upper".'
        elif len(name) > 100:
            error = "The lesion's name is longer than 100 characters."
        else:
            try:
                lesion = follow_as_lesion(upload, name=name, user=request.user, via=audit.Via.PAGE)
            except ValidationError as exc:
                error = " ".join(exc.messages)
            else:
                messages.success(request, f"Photo #{prediction.pk} is now a photo of the lesion {lesion.name}.")
                return redirect("diagnosis:final_diagnosis", pk=lesion.pk)
    existing = selectors.lesions(request.user, patient=upload.patient_ref) if upload.patient_ref else []
    return render(
        request,
        "diagnosis/name_lesion.html",
        {
            "prediction": prediction,
            "upload": upload,
            "error": error,
            "existing": existing,
            "may_record": may_record(request.user),
        },
        status=400 if error else 200,
    )


def _labelled(details: dict) -> dict:
    """An audit event's values in words, for the page's list of changes."""

    def words(values):
        if not values:
            return None
        return {
            "diagnosis": FinalDiagnosis.Diagnosis(values["diagnosis"]).label,
            "method": FinalDiagnosis.Method(values["method"]).label,
            "diagnosed_on": values["diagnosed_on"],
            "comment": values.get("comment", ""),
        }

    return {"new": words(details), "previous": words(details.get("previous"))}


def _report_or_error(request):
    try:
        start, end = performance.parse_period(request.GET.get("start", ""), request.GET.get("end", ""))
    except ValidationError as exc:
        return None, " ".join(exc.messages)
    return performance.build_report(selectors.visible_predictions(request.user), start=start, end=end), ""


def _data_uri(png: bytes | None) -> str:
    return f"data:image/png;base64,{base64.b64encode(png).decode()}" if png else ""


def performance_page(request):
    """The model on the clinic's confirmed cases; missed cancers first."""
    _require_reviewer(request.user)
    report, error = _report_or_error(request)
    context = {
        "report": report,
        "error": error,
        "start": request.GET.get("start", ""),
        "end": request.GET.get("end", ""),
        "statement": performance.BIASED_SAMPLE_STATEMENT,
        "too_few": performance.TOO_FEW,
        "max_width": performance.MAX_INTERVAL_WIDTH,
        "min_auc": performance.MIN_CASES_PER_CLASS_FOR_AUC,
        "query": request.GET.urlencode(),
    }
    if report is not None:
        # matplotlib: loaded by the first page that draws, not by every worker.
        from . import performance_plots

        context["roc_png"] = _data_uri(performance_plots.roc_png(report.overall, report.by_model_version))
        context["calibration_png"] = _data_uri(performance_plots.calibration_png(report.overall))
        versions = report.by_model_version
        if len(versions) == 1:  # one version: its figures are the overall ones, shown once
            context["summaries"] = [(f"Model {next(iter(versions))} (the only version)", report.overall)]
        else:
            context["summaries"] = [("All model versions", report.overall)] + [
                (f"Model {version}", summary) for version, summary in versions.items()
            ]
    return render(request, "diagnosis/performance.html", context, status=400 if error else 200)


def performance_csv(request):
    """The confirmed cases as CSV, pseudonymous (patient reference and ids only)."""
    _require_reviewer(request.user)
    report, error = _report_or_error(request)
    if report is None:
        return HttpResponse(error, status=400, content_type="text/plain; charset=utf-8")
    audit.record(
        request.user,
        audit.Action.EXPORT,
        None,
        via=audit.Via.PAGE,
        what="confirmed cases (CSV)",
        start=request.GET.get("start") or None,
        end=request.GET.get("end") or None,
        rows=len(report.cases),
    )
    response = HttpResponse(performance.cases_csv(report), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="skincare-confirmed-cases-{timezone.localdate():%Y%m%d}.csv"'
    )
    return response

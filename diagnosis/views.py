"""The clinician's pages. Thin: they read through selectors and write through services.

Every page needs a logged-in user (LoginRequiredMiddleware); the media view
answers the API's token as well as the session cookie. Opening a result or a
lesion is written to the audit trail.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view

from ml.serving import classifier

from . import bodymap, evolution, letter, selectors, services
from .audit import Via
from .forms import PinForm, ReviewForm, UploadForm
from .models import Prediction
from .storage import StorageUnavailable
from .validators import parse_id

REVIEW_PERMISSION = "diagnosis.change_prediction"


def _int_or_none(value) -> int | None:
    """An id from the query string; None for anything that cannot be one (text, too large)."""
    return parse_id(value)


@require_http_methods(["GET", "POST"])
def upload(request):
    if request.method == "POST":
        form = UploadForm(request.POST, request.FILES, lesions_of=request.POST.get("patient_ref", "").strip())
        if form.is_valid():
            try:
                prediction = services.submit_upload(uploaded_by=request.user, via=Via.PAGE, **form.cleaned_data)
            except StorageUnavailable as exc:
                form.add_error(None, str(exc))
                context = {"form": form, "model_info": classifier.model_info()}
                return render(request, "diagnosis/upload.html", context, status=503)
            return redirect("diagnosis:result", pk=prediction.pk)
    else:
        # "Add a photo of this lesion" (?lesion=<id>) and "of this patient" (?patient_ref=) links.
        initial = {}
        lesion = selectors.visible_lesions(request.user).filter(pk=_int_or_none(request.GET.get("lesion"))).first()
        if lesion is not None:
            initial = {"lesion": lesion.pk, "patient_ref": lesion.patient_ref}
        elif request.GET.get("patient_ref"):
            initial = {"patient_ref": request.GET["patient_ref"].strip()}
        form = UploadForm(initial=initial, lesions_of=initial.get("patient_ref", ""))
    return render(
        request,
        "diagnosis/upload.html",
        {"form": form, "model_info": classifier.model_info(), "body_map": bodymap.figures(pins=_form_pin(form))},
    )


def _form_pin(form) -> list:
    """The pin the clinician had placed, redrawn when the form comes back with an error."""
    data = form.data if form.is_bound else {}
    try:
        view, x, y = data.get("map_view", ""), float(data.get("map_x", "")), float(data.get("map_y", ""))
    except (TypeError, ValueError):
        return []
    return [(view, x, y, "This lesion", "")] if bodymap.site_at(view, x, y) else []


def _render_result(request, prediction, review_form=None, status=200):
    return render(
        request,
        "diagnosis/result.html",
        {
            "prediction": prediction,
            "upload": prediction.upload,
            "may_review": request.user.has_perm(REVIEW_PERMISSION),
            "review_form": review_form
            or ReviewForm(
                initial={"decision": prediction.review_decision or None, "comment": prediction.review_comment}
            ),
            "from_queue": request.GET.get("from") == "queue" or request.POST.get("from") == "queue",
        },
        status=status,
    )


def result(request, pk: int):
    prediction = get_object_or_404(selectors.visible_predictions(request.user), pk=pk)
    services.note_viewed(request.user, prediction, via=Via.PAGE)
    return _render_result(request, prediction)


@require_POST
def retry(request, pk: int):
    prediction = get_object_or_404(selectors.visible_predictions(request.user), pk=pk)
    if prediction.is_retryable:
        prediction = services.retry_prediction(prediction, user=request.user, via=Via.PAGE)
        if prediction.status == prediction.Status.DONE:  # the outcome and the next step, as the page says them
            messages.success(
                request, f"Assessed: {prediction.get_outcome_display()}. Next step: {prediction.next_step}"
            )
        else:
            messages.warning(request, prediction.message)
    return redirect("diagnosis:result", pk=prediction.pk)


@require_POST
@permission_required(REVIEW_PERMISSION, raise_exception=True)
def review(request, pk: int):
    """Record a reviewer's decision from the result page; back to the queue when it came from there."""
    prediction = get_object_or_404(selectors.visible_predictions(request.user), pk=pk)
    form = ReviewForm(request.POST)
    from_queue = request.POST.get("from") == "queue"
    if not form.is_valid():
        # The page again, with what the reviewer typed and why it was refused: nothing typed is lost.
        messages.error(request, "The review was not recorded: see below.")
        return _render_result(request, prediction, review_form=form, status=400)
    services.record_review(
        prediction,
        reviewer=request.user,
        decision=form.cleaned_data["decision"],
        comment=form.cleaned_data["comment"],
        via=Via.PAGE,
    )
    messages.success(request, f"Review recorded for #{prediction.pk}: {prediction.get_review_decision_display()}.")
    if from_queue:
        return redirect("diagnosis:queue")
    return redirect("diagnosis:result", pk=pk)


def history(request):
    lesion_id = _int_or_none(request.GET.get("lesion"))
    filters = {
        "outcome": request.GET.get("outcome", "").strip(),
        "unreviewed": request.GET.get("unreviewed") == "1",
        "patient_ref": request.GET.get("q", "").strip(),
        "patient": request.GET.get("patient", "").strip(),
        "lesion": lesion_id,
    }
    predictions = selectors.history(request.user, **filters)
    page = Paginator(predictions, settings.SKINCARE_HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    lesion_options = selectors.lesions(request.user, patient=filters["patient"])
    return render(
        request,
        "diagnosis/history.html",
        {
            "page": page,
            "filters": filters,
            "filtered": any(filters.values()),
            "query": query.urlencode(),
            "outcome_choices": [("attention", "Needs a doctor or uncertain"), *Prediction.Outcome.choices],
            "lesion_options": lesion_options,
            "chosen_lesion": selectors.visible_lesions(request.user).filter(pk=lesion_id).first(),
        },
    )


def queue(request):
    """The review queue: needs a doctor or uncertain, not yet reviewed, oldest first."""
    page = Paginator(selectors.review_queue(request.user), settings.SKINCARE_HISTORY_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    return render(
        request, "diagnosis/queue.html", {"page": page, "may_review": request.user.has_perm(REVIEW_PERMISSION)}
    )


def lesion_list(request):
    """All lesions, or one patient's, with that patient's pins on the body map (each linking to its timeline)."""
    patient = request.GET.get("patient", "").strip()
    page = Paginator(selectors.lesions(request.user, patient=patient), settings.SKINCARE_HISTORY_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    body_map = None
    if patient:
        pins = [
            (lesion.map_view, lesion.map_x, lesion.map_y, lesion.name, reverse("diagnosis:lesion", args=[lesion.pk]))
            for lesion in selectors.lesions(request.user, patient=patient)
            if lesion.has_pin
        ]
        body_map = bodymap.figures(pins=pins)
    return render(request, "diagnosis/lesion_list.html", {"page": page, "patient": patient, "body_map": body_map})


def lesion_detail(request, pk: int, pin_form=None, status=200):
    """A lesion's photos side by side, oldest first, and whether it has changed markedly."""
    lesion = get_object_or_404(selectors.visible_lesions(request.user), pk=pk)
    rule = evolution.Rule.from_settings()
    visits = evolution.follow(selectors.lesion_visits(request.user, lesion), rule)
    services.note_viewed(request.user, lesion, via=Via.PAGE)
    versions = sorted({v.prediction.model_version for v in visits if v.prediction.is_assessed})
    return render(
        request,
        "diagnosis/lesion.html",
        {
            "lesion": lesion,
            "visits": visits,
            "rule": rule,
            "change": evolution.latest_change(visits),
            "model_versions": versions,
            "pin_form": pin_form or PinForm(initial={"view": lesion.map_view, "x": lesion.map_x, "y": lesion.map_y}),
            "body_map": bodymap.figures(
                pins=[(lesion.map_view, lesion.map_x, lesion.map_y, lesion.name, "")] if lesion.has_pin else []
            ),
        },
        status=status,
    )


@require_POST
def place_pin(request, pk: int):
    """Mark (or move) the lesion's pin on the body map, from its page."""
    lesion = get_object_or_404(selectors.visible_lesions(request.user), pk=pk)
    form = PinForm(request.POST)
    if form.is_valid():
        try:
            services.place_pin(lesion, user=request.user, via=Via.PAGE, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
    if not form.is_valid():
        return lesion_detail(request, pk, pin_form=form, status=400)
    messages.success(request, f"Pinned on the body map: {lesion.pin_description}.")
    return redirect("diagnosis:lesion", pk=pk)


def lesion_letter(request, pk: int):
    """The referral letter for one lesion, as a PDF (the page's link; the API has the same at
    /api/lesions/<id>/letter.pdf)."""
    lesion = get_object_or_404(selectors.visible_lesions(request.user), pk=pk)
    return letter_response(request, lesion, via=Via.PAGE)


def letter_response(request, lesion, *, via: str) -> HttpResponse:
    content = letter.render(lesion, list(selectors.lesion_visits(request.user, lesion)))
    services.note_letter(request.user, lesion, via=via)
    response = HttpResponse(content, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="referral-lesion-{lesion.pk}.pdf"'
    response["Cache-Control"] = "private, no-store"
    return response


@extend_schema(
    summary="A stored photo, thumbnail or heat map (the URLs in a prediction)",
    responses={
        (200, "image/png"): OpenApiTypes.BINARY,
        (200, "image/jpeg"): OpenApiTypes.BINARY,
        (401, "application/json"): {"type": "object", "properties": {"detail": {"type": "string"}}},
        (403, "application/json"): {"type": "object", "properties": {"detail": {"type": "string"}}},
        (404, "application/json"): {"type": "object", "properties": {"detail": {"type": "string"}}},
        (429, "application/json"): {"type": "object", "properties": {"detail": {"type": "string"}}},
    },
)
@api_view(["GET"])
def media(request, path: str):
    """Serve a stored photo, thumbnail or heat map to a signed-in user (session or API
    token); 401/403 otherwise."""
    stored = selectors.media_file(request.user, path)
    if stored is None:
        raise Http404("No such image.")
    try:
        opened = stored.open("rb")
    except FileNotFoundError:  # a row whose file is gone (manage.py check_media lists them)
        raise Http404("No such image.")
    response = FileResponse(opened)
    response["Cache-Control"] = "private, max-age=3600"
    return response

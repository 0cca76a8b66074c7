"""The clinician's pages. Thin: they read through selectors and write through services.

Every page needs a logged-in user (LoginRequiredMiddleware); the media view
answers the API's token as well as the session cookie.
"""
from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST
from rest_framework.decorators import api_view

from ml import classifier

from . import selectors, services
from .forms import UploadForm


@require_http_methods(["GET", "POST"])
def upload(request):
    if request.method == "POST":
        form = UploadForm(request.POST, request.FILES)
        if form.is_valid():
            prediction = services.submit_upload(uploaded_by=request.user, **form.cleaned_data)
            return redirect("diagnosis:result", pk=prediction.pk)
    else:
        form = UploadForm()
    return render(request, "diagnosis/upload.html", {"form": form, "model_info": classifier.model_info()})


def result(request, pk: int):
    prediction = get_object_or_404(selectors.visible_predictions(request.user), pk=pk)
    return render(request, "diagnosis/result.html", {"prediction": prediction, "upload": prediction.upload})


@require_POST
def retry(request, pk: int):
    prediction = get_object_or_404(selectors.visible_predictions(request.user), pk=pk)
    if prediction.is_retryable:
        prediction = services.run_prediction(prediction)
        level = messages.SUCCESS if prediction.status == prediction.Status.DONE else messages.WARNING
        messages.add_message(request, level, prediction.message)
    return redirect("diagnosis:result", pk=prediction.pk)


def history(request):
    filters = {
        "flagged": request.GET.get("flagged") == "1",
        "unreviewed": request.GET.get("unreviewed") == "1",
        "patient_ref": request.GET.get("q", "").strip(),
    }
    predictions = selectors.history(request.user, **filters)
    page = Paginator(predictions, settings.SKINCARE_HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "diagnosis/history.html",
        {"page": page, "filters": filters, "query": query.urlencode()},
    )


@api_view(["GET"])
def media(request, path: str):
    """Serve an uploaded image to a signed-in user (session or API token); 401/403 otherwise."""
    stored = selectors.media_file(request.user, path)
    if stored is None:
        raise Http404("No such image.")
    response = FileResponse(stored.open("rb"))
    response["Cache-Control"] = "private, max-age=3600"
    return response

"""Issue 32: the result page a busy clinician reads in five seconds. The verdict and one next
step come first (the same words in the API and the letter, from diagnosis/wording.py), the
numbers are folded into Details, the heat map sits behind a toggle with its limits and never
on a low-risk result, and a refused review keeps what the reviewer typed."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from django.utils.html import escape

from diagnosis import services, wording
from diagnosis.images import check_image
from diagnosis.models import Prediction
from diagnosis.tests.helpers import redness_png, upload_file

pytestmark = pytest.mark.django_db

API = "/api/predictions/"


def assess(user, difference: int, **fields) -> Prediction:
    image = check_image(upload_file(redness_png(difference), "m.png", "image/png"))
    return services.submit_upload(uploaded_by=user, image=image, **fields)


@pytest.mark.parametrize(
    "difference, outcome, step",
    [
        (40, "needs_doctor", "Refer the patient to dermatology."),
        (0, "uncertain", "Have a doctor look at this lesion."),
        (
            -40,
            "low_risk",
            f"Routine: photograph it again in {wording.FOLLOW_UP_MONTHS} months, or sooner if it changes.",
        ),
    ],
)
def test_one_next_step_on_the_page_and_in_the_api(
    logged_in, clinician, token_headers, client, banded_model, difference, outcome, step
):
    prediction = assess(clinician, difference)
    assert prediction.outcome == outcome and prediction.next_step == step
    page = logged_in.get(reverse("diagnosis:result", args=[prediction.pk])).content.decode()
    # verdict, then the step, then the photo, before anything else in the page's main block
    verdict_at = page.index('class="verdict')
    assert verdict_at < page.index(f"Next step: {step}") < page.index("Uploaded photo") < page.index("<summary>Details")
    # the numbers live in the folded Details section, not in the verdict block
    top = page[verdict_at : page.index("<summary>Details")]
    for engineer_text in ("threshold", "Model version", "Prediction time", " ms<", " %"):
        assert engineer_text not in top, engineer_text
    details = page[page.index("<summary>Details") :]
    assert "Model version" in details and "Prediction time" in details and escape(prediction.score_explained) in details
    assert client.get(f"{API}{prediction.pk}/", **token_headers).json()["next_step"] == step


def test_not_assessed_results_say_what_to_do(logged_in, no_model, clinician):
    prediction = assess(clinician, 40)
    assert prediction.status == "no_model" and prediction.next_step == wording.NEXT_STEPS["retryable"]
    page = logged_in.get(reverse("diagnosis:result", args=[prediction.pk])).content.decode()
    assert f"Next step: {wording.NEXT_STEPS['retryable']}" in page and "Retry the prediction" in page


def test_the_heat_map_is_behind_a_toggle_with_its_limits_and_never_on_low_risk(logged_in, clinician, banded_model):
    flagged, low = assess(clinician, 40), assess(clinician, -40)
    assert flagged.heatmap and low.heatmap  # the model drew both; the page decides what to show
    page = logged_in.get(reverse("diagnosis:result", args=[flagged.pk])).content.decode()
    toggle = re.search(r'<details class="card heatmap-toggle">.*?</details>', page, re.DOTALL).group(0)
    assert "<summary>Show where the model looked</summary>" in toggle
    assert flagged.heatmap.url in toggle and escape(flagged.heatmap_caption) in toggle
    assert page.count(flagged.heatmap.url) == 1  # nowhere else on the page
    page = logged_in.get(reverse("diagnosis:result", args=[low.pk])).content.decode()
    assert low.heatmap.url not in page and "Show where the model looked" not in page


def test_the_probability_is_a_plain_number_explained_once(logged_in, clinician, banded_model):
    prediction = assess(clinician, 40)  # 0.778
    page = logged_in.get(reverse("diagnosis:result", args=[prediction.pk])).content.decode()
    assert "Model score 0.778" in page and "78 %" not in page and "%" not in page.split("<main>")[1]
    assert page.count("The score is the model&#x27;s estimate of the probability of malignancy") == 1


def test_a_refused_review_keeps_the_typed_comment(reviewer_client, reviewer, banded_model):
    prediction = assess(reviewer, 40)
    typed = "Asymmetric, blue-white veil: but which decision?"
    response = reviewer_client.post(
        reverse("diagnosis:review", args=[prediction.pk]), {"decision": "other", "comment": "  ", "from": "queue"}
    )
    assert response.status_code == 400
    assert "Say in the comment what the other decision is." in response.content.decode()
    # a refusal for another reason (no decision chosen) keeps what was typed
    response = reviewer_client.post(reverse("diagnosis:review", args=[prediction.pk]), {"comment": typed})
    page = response.content.decode()
    assert response.status_code == 400 and "Choose a decision." in page
    assert re.search(r"<textarea[^>]*>\s*" + re.escape(escape(typed)) + "</textarea>", page)
    prediction.refresh_from_db()
    assert not prediction.is_reviewed and prediction.review_comment == ""


def test_the_review_form_comes_right_after_the_verdict(reviewer_client, reviewer, banded_model):
    prediction = assess(reviewer, 40)
    page = reviewer_client.get(reverse("diagnosis:result", args=[prediction.pk])).content.decode()
    assert (
        page.index('class="verdict')
        < page.index('id="review"')
        < page.index("heatmap-toggle")
        < page.index("<summary>Details")
    )


class TestBoundaryNoteOnlyWhereTheActionCouldChange:
    """The close-call stand-in: needs a doctor from 0.6, uncertain from 0.4, margin 0.5 logits."""

    def test_near_the_doctors_edge_the_note_shows(self, clinician, close_call_model):
        low = assess(clinician, -20)  # logit -0.63: 0.22 below the uncertain threshold
        assert low.near_boundary and wording.could_change_action(low) and low.boundary_note

    def test_near_the_edge_between_uncertain_and_needs_a_doctor_it_does_not(self, clinician, close_call_model):
        high = assess(clinician, 20)  # logit 0.63: 0.22 above the threshold, 1.03 above the doctor's edge
        assert high.near_boundary and not wording.could_change_action(high) and high.boundary_note == ""

    def test_without_the_installed_model_the_nearer_edge_decides(self, clinician, close_call_model, settings, tmp_path):
        high, low = assess(clinician, 20), assess(clinician, -20)
        settings.SKINCARE_MODEL_DIR = tmp_path / "another-model"  # the margin is unknown now
        assert wording.boundary_margin(high.model_version) is None
        assert not wording.could_change_action(high) and wording.could_change_action(low)


def test_the_timeline_offers_the_heat_map_only_on_visits_that_ask_for_a_doctor(logged_in, clinician, banded_model):
    flagged = assess(clinician, 40, patient_ref="PT-1", lesion_name="nape")
    low = assess(clinician, -40, lesion=flagged.upload.lesion)
    page = logged_in.get(reverse("diagnosis:lesion", args=[flagged.upload.lesion_id])).content.decode()
    toggles = re.findall(r"<details><summary>Show where the model looked</summary>.*?</details>", page, re.DOTALL)
    assert len(toggles) == 1 and flagged.heatmap.url in toggles[0] and escape(flagged.heatmap_caption) in toggles[0]
    assert low.heatmap and low.heatmap.url not in page

"""Three outcomes and "not assessed": needs a doctor (at or above the threshold),
uncertain (the band below it), low risk (below the band), and not assessed (the
image check refused the photo, or no model, or a failure). The stand-in model's
probability is steered exactly by the photo's redness (helpers.redness_png)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from diagnosis.models import Prediction
from diagnosis.tests.helpers import lesion_on_skin_png, probability_for, redness_png, upload_file

pytestmark = pytest.mark.django_db

API = "/api/predictions/"


def post_upload(client, content: bytes, **fields):
    return client.post(reverse("diagnosis:upload"), {"image": upload_file(content, "mole.png", "image/png"), **fields})


def post_api(client, content: bytes, headers):
    return client.post(API, {"image": upload_file(content, "mole.png", "image/png")}, **headers)


@pytest.mark.parametrize(
    "difference, outcome, label, words",
    [
        (40, "needs_doctor", "malignant", "Needs a doctor"),  # p = 0.778 >= 0.6
        (0, "uncertain", "benign", "Uncertain — have a doctor look"),  # 0.4 <= p = 0.5 < 0.6
        (-40, "low_risk", "benign", "Low risk"),  # p = 0.222 < 0.4
    ],
)
def test_three_outcomes_from_the_band(logged_in, banded_model, difference, outcome, label, words):
    response = post_upload(logged_in, redness_png(difference))
    prediction = Prediction.objects.get()
    assert (prediction.status, prediction.outcome, prediction.label) == ("done", outcome, label)
    assert prediction.probability_malignant == pytest.approx(probability_for(difference), abs=1e-3)
    assert (prediction.threshold, prediction.uncertain_threshold) == (0.6, 0.4)
    assert prediction.heatmap and prediction.reason == ""

    page = logged_in.get(response["Location"]).content.decode()
    assert words in page
    # The clinician's words first, then the numbers behind them (in Details), never a percentage.
    assert f'<p class="next-step">Next step: {prediction.next_step}</p>' in page
    assert f"{prediction.probability_malignant:.3f}" in page and "0.600" in page and "0.400" in page
    assert "Uncertain from" in page and " %" not in page
    # the heat map is offered, behind its toggle and with its limits, only where a doctor should look
    assert ("Show where the model looked" in page) == (outcome != "low_risk")
    assert (prediction.heatmap.url in page) == (outcome != "low_risk")


def test_messages_say_where_the_probability_lies(banded_model, clinician):
    from diagnosis import services
    from diagnosis.images import check_image

    def message(difference):
        image = check_image(upload_file(redness_png(difference), "m.png", "image/png"))
        return services.submit_upload(uploaded_by=clinician, image=image).message

    assert message(40) == "Needs a doctor: the probability of malignancy 0.778 is at or above the threshold 0.600."
    assert message(0) == (
        "Uncertain — have a doctor look: the probability of malignancy 0.500 is below the threshold 0.600 "
        "but at or above the uncertain threshold 0.400."
    )
    assert message(-40) == "Low risk: the probability of malignancy 0.222 is below the uncertain threshold 0.400."


@pytest.mark.parametrize("difference, outcome", [(40, "needs_doctor"), (0, "uncertain"), (-40, "low_risk")])
def test_api_carries_the_outcome_and_numbers(client, token_headers, banded_model, difference, outcome):
    response = post_api(client, redness_png(difference), token_headers)
    assert response.status_code == 201
    body = response.json()
    assert body["outcome"] == outcome and body["status"] == "done"
    assert body["label"] == ("malignant" if outcome == "needs_doctor" else "benign")
    assert body["threshold"] == 0.6 and body["uncertain_threshold"] == 0.4
    assert body["reason"] is None and body["heatmap_url"]


def test_without_a_band_there_are_two_outcomes(logged_in, standin_model):
    # The stand-in's default saves uncertain_threshold == threshold: the band is empty.
    response = post_upload(logged_in, redness_png(-10))
    prediction = Prediction.objects.get()
    assert prediction.outcome == "low_risk" and not prediction.has_uncertain_band
    page = logged_in.get(response["Location"]).content.decode()
    assert "Uncertain from" not in page and "Needs a doctor from</dt><dd>0.500" in page


class TestNotAssessedByTheImageCheck:
    def test_uniform_image_is_stored_as_not_assessed_with_the_reason(self, logged_in, gated_model):
        response = post_upload(logged_in, redness_png(60))
        assert response.status_code == 302
        prediction = Prediction.objects.get()
        assert prediction.status == "refused" and prediction.outcome == "not_assessed"
        assert prediction.label == "" and prediction.probability_malignant is None and not prediction.heatmap
        assert prediction.reason.startswith("The image is nearly one colour")
        assert prediction.gate_measures["contrast"] < 4.0  # what the check measured is kept
        assert prediction.model_version == "standin-test" and prediction.upload.image

        page = logged_in.get(response["Location"]).content.decode()
        assert "Not assessed" in page and "The image is nearly one colour" in page
        assert "Retry the prediction" not in page  # the model has answered: retake the photo instead
        assert "Image check measures" in page

    def test_api_answers_201_with_outcome_and_reason(self, client, token_headers, gated_model):
        response = post_api(client, redness_png(60), token_headers)
        assert response.status_code == 201
        body = response.json()
        assert body["outcome"] == "not_assessed" and body["status"] == "refused"
        assert body["label"] is None and body["probability_malignant"] is None and body["heatmap_url"] is None
        assert body["reason"].startswith("The image is nearly one colour")
        assert body["verdict"] == "Not assessed" and body["message"].startswith(
            "Not assessed: The image is nearly one colour"
        )
        assert Prediction.objects.filter(pk=body["id"]).exists()

    def test_a_lesion_on_skin_passes_the_check(self, client, token_headers, gated_model):
        body = post_api(client, lesion_on_skin_png(), token_headers).json()
        assert body["status"] == "done" and body["outcome"] == "needs_doctor" and body["heatmap_url"]
        assert set(Prediction.objects.get().gate_measures) >= {"brightness", "contrast", "sharpness"}

    def test_retry_leaves_a_refused_prediction_alone(self, logged_in, gated_model):
        post_upload(logged_in, redness_png(60))
        prediction = Prediction.objects.get()
        logged_in.post(reverse("diagnosis:retry", args=[prediction.pk]))
        prediction.refresh_from_db()
        assert prediction.status == "refused" and prediction.attempts == 1


def test_no_model_is_not_assessed_with_the_reason_in_the_api(client, token_headers, no_model):
    body = post_api(client, redness_png(40), token_headers).json()
    assert body["outcome"] == "not_assessed" and body["status"] == "no_model"
    assert body["reason"].startswith("No model available")


def test_history_filters_by_outcome(logged_in, banded_model):
    for difference in (40, 0, -40):
        post_upload(logged_in, redness_png(difference))
    ids = {p.outcome: p.pk for p in Prediction.objects.all()}

    def shown(outcome):
        page = logged_in.get(reverse("diagnosis:history"), {"outcome": outcome}).content.decode()
        return {pk for pk in ids.values() if f'href="/predictions/{pk}/"><img' in page}

    assert shown("uncertain") == {ids["uncertain"]}
    assert shown("low_risk") == {ids["low_risk"]}
    assert shown("attention") == {ids["needs_doctor"], ids["uncertain"]}
    assert shown("") == set(ids.values())


def test_admin_lists_the_uncertain_outcome(admin_client, logged_in, banded_model):
    post_upload(logged_in, redness_png(0))
    changelist = reverse("admin:diagnosis_prediction_changelist")
    response = admin_client.get(changelist, {"outcome__exact": "uncertain"})
    assert [p.outcome for p in response.context["cl"].result_list] == ["uncertain"]
    assert "Uncertain — have a doctor look" in response.content.decode()


class TestCloseToABoundary:
    """A result within the model's boundary margin (here 0.5 logits) of 0.4 or 0.6 carries a note: the same
    photo turned, or another photo, can get another outcome. The stand-in's logit is 8 * (R - B) / 255."""

    @pytest.mark.parametrize(
        "difference, outcome, near, noted",
        [
            (40, "needs_doctor", False, False),  # logit 1.25, 0.85 from the threshold's 0.41
            # logit 0.63, 0.22 from the threshold but 1.03 from the uncertain threshold: a doctor looks
            # either way, so no note (issue 32: the note only where the action could change)
            (20, "needs_doctor", True, False),
            (0, "uncertain", True, True),  # logit 0, 0.41 from both edges of the band
            (-20, "low_risk", True, True),  # logit -0.63, 0.22 below the uncertain threshold's -0.41
            (-40, "low_risk", False, False),  # logit -1.25, 0.85 below it
        ],
    )
    def test_the_note_on_the_result_page_and_in_the_api(
        self, logged_in, client, token_headers, close_call_model, difference, outcome, near, noted
    ):
        response = post_upload(logged_in, redness_png(difference))
        prediction = Prediction.objects.get()
        assert (prediction.outcome, prediction.near_boundary) == (outcome, near)
        page = logged_in.get(response["Location"]).content.decode()
        assert ("Close to a boundary: the same photo turned or flipped can get another outcome" in page) == noted
        # "low risk" close to the band is the close call that matters: a doctor may want to look
        assert ("Low risk here is a close call" in page) == (noted and outcome == "low_risk")

        body = post_api(client, redness_png(difference), token_headers).json()
        assert (body["outcome"], body["near_boundary"]) == (outcome, near)
        assert body["boundary_note"] == Prediction.objects.get(pk=body["id"]).boundary_note
        assert bool(body["boundary_note"]) == noted

    @pytest.mark.parametrize(
        "difference, outcome, checked",
        [(40, "needs_doctor", False), (20, "needs_doctor", True), (-20, "low_risk", True), (-40, "low_risk", False)],
    )
    def test_a_model_that_checks_close_calls_says_it_did(
        self, logged_in, client, token_headers, checking_model, difference, outcome, checked
    ):
        """With a close-call check the note says the photo was looked at in all eight orientations (the
        stand-in scores a uniform colour the same in each, so the outcome stays); far from a boundary,
        the photo as it is, and no note."""
        response = post_upload(logged_in, redness_png(difference))
        prediction = Prediction.objects.get()
        assert (prediction.outcome, prediction.near_boundary) == (outcome, checked)
        assert prediction.views_averaged == (8 if checked else 1)
        page = logged_in.get(response["Location"]).content.decode()
        # the note only near the doctor's edge (low risk here); the map only where a doctor should look
        assert ("checked again with the photo flipped and turned in all 8 ways" in page) == (
            checked and outcome == "low_risk"
        )
        assert ("The map is of the photo as it is, the model's first look" in page) == (
            checked and outcome != "low_risk"
        )
        assert "the same photo turned or flipped can get another outcome" not in page
        assert ("Low risk here is a close call" in page) == (checked and outcome == "low_risk")
        body = post_api(client, redness_png(difference), token_headers).json()
        assert (body["outcome"], body["near_boundary"], body["views_averaged"]) == (
            outcome,
            checked,
            8 if checked else 1,
        )
        assert body["boundary_note"] == Prediction.objects.get(pk=body["id"]).boundary_note

    def test_the_check_is_off_unless_the_setting_turns_it_on(self, logged_in, settings, checking_model_dir):
        """SKINCARE_CLOSE_CALL_CHECK off (the default): the same model answers a close call at first look,
        and the note says the photo turned can get another outcome."""
        from ml.serving import classifier

        settings.SKINCARE_MODEL_DIR = checking_model_dir
        classifier.reset()
        try:
            response = post_upload(logged_in, redness_png(-20))
        finally:
            classifier.reset()
        prediction = Prediction.objects.get()
        assert (prediction.near_boundary, prediction.views_averaged) == (True, 1)
        assert (
            "the same photo turned or flipped can get another outcome"
            in logged_in.get(response["Location"]).content.decode()
        )

    def test_a_model_without_a_margin_notes_nothing(self, logged_in, banded_model):
        post_upload(logged_in, redness_png(0))  # p = 0.5, as close to the band's edges as above
        prediction = Prediction.objects.get()
        assert prediction.outcome == "uncertain" and not prediction.near_boundary and prediction.boundary_note == ""

    def test_lists_mark_close_calls_and_the_admin_filters_them(self, logged_in, admin_client, close_call_model):
        for difference in (40, 20, -20):  # needs a doctor; needs a doctor, close; low risk, close
            post_upload(logged_in, redness_png(difference), patient_ref="PT-1", lesion_name="back, left")
        close = Prediction.objects.filter(near_boundary=True)
        assert close.count() == 2
        # Only the low-risk close call is marked: the other is close to the edge between "needs a doctor"
        # and "uncertain", where a doctor looks either way. History: every upload; the lesion page:
        # every visit; the queue: the two that need a doctor (neither marked).
        for page, marks in (("diagnosis:history", 1), ("diagnosis:queue", 0)):
            assert logged_in.get(reverse(page)).content.decode().count('class="close-call"') == marks, page
        lesion = Prediction.objects.first().upload.lesion
        assert (
            logged_in.get(reverse("diagnosis:lesion", args=[lesion.pk])).content.decode().count('class="close-call"')
            == 1
        )
        changelist = reverse("admin:diagnosis_prediction_changelist")
        listed = admin_client.get(changelist, {"near_boundary__exact": "1"}).context["cl"].result_list
        assert sorted(p.pk for p in listed) == sorted(p.pk for p in close)

    def test_a_refused_photo_gets_no_note(self, settings, tmp_path, logged_in):
        from ml.serving import classifier
        from ml.testing import write_standin_model

        settings.SKINCARE_MODEL_DIR = write_standin_model(tmp_path, threshold=0.5, gate=True, boundary_margin=50.0)
        classifier.reset()
        try:
            post_upload(logged_in, redness_png(0))  # uniform: refused by the image check
        finally:
            classifier.reset()
        prediction = Prediction.objects.get()
        assert prediction.status == "refused" and not prediction.near_boundary and prediction.boundary_note == ""

"""A real browser (Debian's Chromium) on the reviewer's side of closing the loop: record a
lesion's final diagnosis on its page, then read the performance page, missed cancers
first, with its plots drawn. Full-page screenshots are saved under
test-artifacts/test_reviewer_reads_the_performance_page/.

The rows come through the services with the stand-in model (fast, no dataset needed);
outside CI the test skips when Chromium is missing, in CI that fails (see test_browser.py).
"""

from __future__ import annotations

import datetime

import pytest

from .test_browser import PASSWORD, browser, loaded_images, save_page  # noqa: F401  (browser is a fixture)

pytestmark = pytest.mark.e2e


@pytest.mark.django_db(transaction=True)
def test_reviewer_reads_the_performance_page(browser, live_server, standin_model, django_user_model, artifacts_dir):  # noqa: F811
    from django.contrib.auth.models import Permission
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from diagnosis import final_diagnoses, services
    from diagnosis.images import check_image
    from diagnosis.models import FinalDiagnosis
    from diagnosis.tests.helpers import redness_png, upload_file

    reviewer = django_user_model.objects.create_user("reviewer", password=PASSWORD, is_staff=True)
    reviewer.user_permissions.add(Permission.objects.get(codename="change_prediction"))

    def photo(lesion: str, difference: int):
        image = check_image(upload_file(redness_png(difference), "m.png", "image/png"))
        return services.submit_upload(uploaded_by=reviewer, image=image, patient_ref="E2E-7", lesion_name=lesion)

    # Six confirmed lesions (stand-in threshold 0.5): one melanoma called low risk, the missed cancer.
    cases = [
        ("back", 60, "melanoma_invasive"),
        ("arm", 40, "basal_cell_carcinoma"),
        ("leg", -60, "nevus_common"),
        ("neck", -40, "seborrheic_keratosis"),
        ("chest", 30, "nevus_dysplastic"),
    ]
    for lesion, difference, diagnosis in cases:
        final_diagnoses.record_final_diagnosis(
            photo(lesion, difference).upload.lesion,
            recorded_by=reviewer,
            diagnosis=diagnosis,
            method="histopathology",
            diagnosed_on=datetime.date(2026, 1, 15),
        )
    missed = photo("scalp", -30)

    wait = WebDriverWait(browser, 60)
    browser.get(f"{live_server.url}/accounts/login/")
    browser.find_element(By.NAME, "username").send_keys("reviewer")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(ec.url_matches(r"/upload/$"))

    # The result page links to the lesion's final diagnosis; the reviewer records it there.
    browser.get(f"{live_server.url}/predictions/{missed.pk}/")
    browser.find_element(By.LINK_TEXT, "record the final diagnosis").click()
    wait.until(ec.url_contains("/final-diagnosis/"))
    Select(browser.find_element(By.NAME, "diagnosis")).select_by_value("melanoma_in_situ")
    browser.find_element(By.CSS_SELECTOR, "input[name=method][value=histopathology]").click()
    date_field = browser.find_element(By.NAME, "diagnosed_on")
    browser.execute_script("arguments[0].value = '2026-01-20';", date_field)
    save_page(browser, artifacts_dir / "1-final-diagnosis-form.png")
    browser.find_element(By.CSS_SELECTOR, "#record button[type=submit]").click()
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#current .diagnosis"), "Melanoma in situ"))
    assert FinalDiagnosis.objects.get(lesion=missed.upload.lesion).recorded_by == reviewer
    save_page(browser, artifacts_dir / "2-final-diagnosis-recorded.png")

    browser.find_element(By.LINK_TEXT, "Performance").click()
    wait.until(ec.url_contains("/performance/"))
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Confirmed cases are a biased sample" in body
    missed_section = browser.find_element(By.ID, "missed")
    assert "Missed cancers: low risk, final diagnosis malignant (1)" in missed_section.text
    assert (
        missed_section.find_element(By.LINK_TEXT, f"#{missed.pk}")
        .get_attribute("href")
        .endswith(f"/predictions/{missed.pk}/")
    )
    assert "too few confirmed cases to say" in body  # six cases: every interval is wide
    plots = loaded_images(browser, "img.plot")
    assert len(plots) == 2 and all(plot["ok"] for plot in plots), plots
    save_page(browser, artifacts_dir / "3-performance.png")

"""A real browser (Debian's Chromium, driven by Selenium and chromedriver) through the
clinician's path: log in, upload a real dermoscopic photo, read the result (with its
heat map where the page shows one), and find the upload in the history.

A full-page screenshot of every page is saved under test-artifacts/test_clinician_journey/.
(The live server serves uploads itself; the login-checked media view behind gunicorn is
checked in test_deploy.py.)
Outside CI the test skips when /usr/bin/chromium is missing; in CI (CI=true) that fails.
"""

from __future__ import annotations

import base64
import math
import re
import tempfile

import pytest

from .conftest import CHROMEDRIVER, CHROMIUM, require_or_skip

pytestmark = pytest.mark.e2e

PASSWORD = "e2e-Only-Password-7431"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # The machine has no network: without these Chromium keeps dialling out.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
]


@pytest.fixture
def browser():
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        require_or_skip(f"{CHROMIUM} or {CHROMEDRIVER} not found (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        driver.set_page_load_timeout(180)  # the first prediction loads TensorFlow and the model
        try:
            yield driver
        finally:
            driver.quit()


def save_page(driver, path) -> None:
    """A PNG of the whole page, not only the window."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": math.ceil(size["width"]), "height": math.ceil(size["height"]), "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 1000, f"empty screenshot {path}"


def loaded_images(driver, selector: str = "img") -> list[dict]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(i => ({"
        " src: i.currentSrc || i.src, alt: i.alt || '', cls: i.className || '', id: i.id || '',"
        " ok: i.complete && i.naturalWidth > 0}));",
        selector,
    )


@pytest.mark.django_db(transaction=True)
def test_clinician_journey(browser, live_server, serving_model, datasets_root, django_user_model, artifacts_dir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from diagnosis.models import Prediction

    photo = sorted((datasets_root / "ph2" / "images").glob("IMD*.jpg"))[0]
    django_user_model.objects.create_user("clinician", password=PASSWORD)
    wait = WebDriverWait(browser, 180)

    # Any page sends a stranger to the login page.
    browser.get(f"{live_server.url}/upload/")
    wait.until(ec.url_contains("/accounts/login/"))
    save_page(browser, artifacts_dir / "1-login.png")
    browser.find_element(By.NAME, "username").send_keys("clinician")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    # Not url_contains("/upload/"): the login page's own URL has it (?next=/upload/), so that
    # wait could return before the browser has left the login page.
    wait.until(ec.url_matches(r"/upload/$"))
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Upload a mole photo"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Upload a mole photo"
    browser.find_element(By.NAME, "image").send_keys(str(photo))
    browser.find_element(By.NAME, "patient_ref").send_keys("E2E-0001")
    save_page(browser, artifacts_dir / "2-upload.png")
    browser.find_element(By.CSS_SELECTOR, "form[enctype='multipart/form-data'] button[type=submit]").click()

    wait.until(ec.url_matches(r"/predictions/\d+/$"))
    pk = int(re.search(r"/predictions/(\d+)/$", browser.current_url).group(1))
    prediction = Prediction.objects.select_related("upload").get(pk=pk)
    assert prediction.status == Prediction.Status.DONE, prediction.reason
    verdict = browser.find_element(By.CSS_SELECTOR, ".verdict").text
    assert verdict == prediction.get_outcome_display()
    # A result close to the boundary that decides whether a doctor looks says so where the verdict is;
    # any other says nothing of it.
    notes = [note.text for note in browser.find_elements(By.CSS_SELECTOR, ".boundary-note")]
    assert notes == ([prediction.boundary_note] if prediction.boundary_note else []), notes
    assert browser.find_element(By.CSS_SELECTOR, ".next-step").text == f"Next step: {prediction.next_step}"
    assert "E2E-0001" in browser.find_element(By.TAG_NAME, "body").text
    wait.until(lambda d: all(image["ok"] for image in loaded_images(d)))
    images = loaded_images(browser)
    assert any(f"Uploaded photo {pk}" == image["alt"] for image in images), images
    # The heat map, where the result page offers one (a result that asks for a doctor), is behind its
    # toggle, and an image that loaded too; on a low-risk result it is not on the page at all.
    heat_maps = [
        image for image in images if "heat" in " ".join([image["src"], image["alt"], image["cls"], image["id"]]).lower()
    ]
    if prediction.shows_heatmap:
        assert heat_maps and all(image["ok"] for image in heat_maps), images
        browser.find_element(By.CSS_SELECTOR, ".heatmap-toggle summary").click()
        assert browser.find_element(By.CSS_SELECTOR, "img.heatmap").is_displayed()
    else:
        assert heat_maps == [], images
    save_page(browser, artifacts_dir / "3-result.png")
    (artifacts_dir / "heat-map.txt").write_text(
        f"{len(heat_maps)} heat map image(s) on the result page: {heat_maps}\n"
        if heat_maps
        else "The result page shows no heat map image.\n"
    )

    browser.find_element(By.LINK_TEXT, "History").click()
    wait.until(ec.url_contains("/history/"))
    history = browser.find_element(By.TAG_NAME, "body").text
    assert "E2E-0001" in history and verdict in history
    wait.until(lambda d: all(image["ok"] for image in loaded_images(d)))
    save_page(browser, artifacts_dir / "4-history.png")
    assert Prediction.objects.count() == 1

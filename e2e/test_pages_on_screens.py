"""Issue 32 in a real browser (Debian's Chromium), one browser session per screen: a desktop's
1366x768 viewport and a phone's 390x844 (mobile emulation, so the page's viewport meta applies).

For real PH2 photos (a melanoma, and a common nevus photographed earlier as the same lesion's
first visit): the verdict lies within the first screen on the result page; no element is wider
than the viewport on the result, history, queue, lesions and timeline pages (no page-wide
sideways scroll); a pin placed on the upload page's body map (by mouse on the desktop, by
keyboard on the phone) appears on the patient's lesions page and links to the timeline; the
referral letter downloads and its text holds the patient reference, every photo's date and
outcome, and the disclaimer; axe-core (vendored, e2e/vendor/axe.min.js) finds no serious or
critical violation on any of these pages.

Screenshots of every page, axe's findings and the measured boxes are kept under
test-artifacts/test_pages_on_a_screen[desktop|phone]/.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest

from .conftest import CHROMEDRIVER, CHROMIUM, require_or_skip
from .test_browser import CHROMIUM_FLAGS, PASSWORD, loaded_images, save_page

pytestmark = pytest.mark.e2e

AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
SCREENS = {"desktop": (1366, 768, False), "phone": (390, 844, True)}
PATIENT = "E2E-MAP"


def ph2_photos(datasets_root) -> dict[str, Path]:
    """The first melanoma and the first common nevus of PH2, by its own spreadsheet."""
    import openpyxl

    sheet = openpyxl.load_workbook(datasets_root / "ph2" / "PH2_dataset.xlsx", read_only=True).active
    header, found = None, {}
    for row in sheet.iter_rows(values_only=True):
        if header is None:
            if row and row[0] == "Image Name":
                header = list(row)
            continue
        for kind, column in (("melanoma", "Melanoma"), ("nevus", "Common Nevus")):
            if kind not in found and row[header.index(column)] == "X":
                found[kind] = datasets_root / "ph2" / "images" / f"{row[0]}.jpg"
    assert set(found) == {"melanoma", "nevus"}, found
    return found


@pytest.fixture
def screen_browser(request):
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        require_or_skip(f"{CHROMIUM} or {CHROMEDRIVER} not found (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    width, height, mobile = SCREENS[request.param]
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        driver.set_page_load_timeout(180)
        driver.set_script_timeout(60)
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        )
        try:
            yield request.param, driver
        finally:
            driver.quit()


def check_axe(driver, page: str, findings: dict) -> None:
    """axe-core on the page as it is; no serious or critical violation."""
    if not driver.execute_script("return typeof window.axe === 'object';"):
        driver.execute_script(AXE.read_text())
    outcome = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(r => done({version: axe.version, passed: r.passes.length, violations: r.violations.map(v => ({"
        " id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))}))}))"
        ".catch(e => done({error: String(e)}));"
    )
    assert "error" not in outcome and outcome["passed"] > 10, outcome  # axe ran its rules on this page
    findings[page] = outcome
    result = outcome["violations"]
    serious = [v for v in result if v["impact"] in ("serious", "critical")]
    assert not serious, f"{page}: {json.dumps(serious, indent=1)}"


def check_width(driver, page: str, boxes: dict) -> None:
    """Nothing wider than the viewport, and no page-wide sideways scroll."""
    measured = driver.execute_script(
        "const w = document.documentElement.clientWidth;"
        "const wide = Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().width > w + 1)"
        ".slice(0, 10).map(e => e.tagName.toLowerCase() + '.' + (e.getAttribute('class') || '') + ' '"
        " + Math.round(e.getBoundingClientRect().width) + 'px');"
        "return {viewport: w, innerWidth: window.innerWidth, scrollWidth: document.documentElement.scrollWidth, wide: wide};"
    )
    boxes[f"{page} width"] = measured
    assert measured["wide"] == [], f"{page}: {measured}"
    assert measured["scrollWidth"] <= measured["viewport"], f"{page}: {measured}"


def check_first_screen(driver, page: str, boxes: dict, width: int, height: int) -> None:
    """The verdict and the next step lie wholly within the first screen, and the photo starts there."""
    driver.execute_script("window.scrollTo(0, 0);")
    box = driver.execute_script(
        "const r = s => { const b = document.querySelector(s).getBoundingClientRect();"
        " return {top: b.top, bottom: b.bottom, left: b.left, right: b.right}; };"
        "return {verdict: r('.verdict'), next_step: r('.next-step'), photo: r('.result-top .photo img'),"
        " innerHeight: window.innerHeight, innerWidth: window.innerWidth};"
    )
    boxes[f"{page} first screen"] = box
    assert (box["innerWidth"], box["innerHeight"]) == (width, height), box
    for name in ("verdict", "next_step"):
        part = box[name]
        assert part["top"] >= 0 and part["bottom"] <= height and 0 <= part["left"] and part["right"] <= width, (
            name,
            box,
        )
    assert box["photo"]["top"] < height, box


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("screen_browser", list(SCREENS), indirect=True, ids=list(SCREENS))
def test_pages_on_a_screen(screen_browser, live_server, serving_model, datasets_root, django_user_model, artifacts_dir):
    from django.contrib.auth.models import Permission
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.utils import timezone
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from diagnosis import services, wording
    from diagnosis.images import check_image
    from diagnosis.models import Lesion, Prediction, Upload

    screen, browser = screen_browser
    width, height, _ = SCREENS[screen]
    photos = ph2_photos(datasets_root)
    findings: dict = {}
    boxes: dict = {}
    wait = WebDriverWait(browser, 180)

    def shoot(name: str) -> None:
        wait.until(lambda d: all(image["ok"] for image in loaded_images(d, "img:not(.heatmap-pair img)")))
        save_page(browser, artifacts_dir / f"{name}.png")

    def keep_findings():
        (artifacts_dir / "axe.json").write_text(json.dumps(findings, indent=1))
        (artifacts_dir / "boxes.json").write_text(json.dumps(boxes, indent=1))

    # A reviewer (the result page's tallest form) with the nevus photographed 90 days ago.
    user = django_user_model.objects.create_user("reviewer", password=PASSWORD)
    user.user_permissions.add(Permission.objects.get(codename="change_prediction", content_type__app_label="diagnosis"))
    nevus = services.submit_upload(
        uploaded_by=user,
        patient_ref=PATIENT,
        lesion_name="left shoulder",
        image=check_image(SimpleUploadedFile("nevus.jpg", photos["nevus"].read_bytes(), content_type="image/jpeg")),
    )
    Upload.objects.filter(pk=nevus.upload_id).update(created_at=timezone.now() - timedelta(days=90))
    try:
        browser.get(f"{live_server.url}/accounts/login/")
        check_axe(browser, "login", findings)
        # The check can fail: an image without a text alternative is a critical violation for axe.
        browser.execute_script(
            "document.querySelector('main').insertAdjacentHTML('beforeend',"
            ' \'<img id="canary" src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">\');'
        )
        with pytest.raises(AssertionError, match="image-alt"):
            check_axe(browser, "login with a canary", findings)
        browser.execute_script("document.getElementById('canary').remove();")
        shoot("1-login")
        browser.find_element(By.NAME, "username").send_keys("reviewer")
        browser.find_element(By.NAME, "password").send_keys(PASSWORD)
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(ec.url_matches(r"/upload/$"))

        # The melanoma, as the same lesion's next visit, pinned on the chest: by mouse, or by keyboard.
        browser.find_element(By.NAME, "image").send_keys(str(photos["melanoma"]))
        browser.find_element(By.NAME, "patient_ref").send_keys(PATIENT)
        browser.find_element(By.NAME, "lesion_name").send_keys("left shoulder")
        chest = browser.find_element(By.CSS_SELECTOR, 'svg[data-view="front"] [data-site="chest"]')
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", chest)
        if screen == "desktop":
            chest.click()
        else:
            browser.execute_script("arguments[0].focus();", chest)
            chest.send_keys(Keys.ENTER)
        assert browser.find_element(By.NAME, "map_view").get_attribute("value") == "front"
        assert (
            Select(browser.find_element(By.NAME, "body_site")).first_selected_option.get_attribute("value") == "chest"
        )
        assert "Pinned: Chest" in browser.find_element(By.CSS_SELECTOR, ".pin-status").text
        check_axe(browser, "upload", findings)
        check_width(browser, "upload", boxes)
        shoot("2-upload")
        browser.find_element(By.CSS_SELECTOR, "form[enctype='multipart/form-data'] button[type=submit]").click()
        wait.until(ec.url_matches(r"/predictions/\d+/$"))

        melanoma = Prediction.objects.get(pk=int(re.search(r"/predictions/(\d+)/$", browser.current_url).group(1)))
        lesion = Lesion.objects.get()
        assert melanoma.status == "done" and melanoma.upload.lesion == lesion, melanoma.reason
        assert lesion.pin_site == "chest" and melanoma.upload.body_site == "chest"
        for name, prediction in (("3-result-melanoma", melanoma), ("4-result-nevus", nevus)):
            if prediction is not melanoma:
                browser.get(f"{live_server.url}/predictions/{prediction.pk}/")
            assert browser.find_element(By.CSS_SELECTOR, ".verdict").text == prediction.get_outcome_display()
            assert browser.find_element(By.CSS_SELECTOR, ".next-step").text == f"Next step: {prediction.next_step}"
            check_first_screen(browser, name, boxes, width, height)
            check_width(browser, name, boxes)
            check_axe(browser, name, findings)
            shoot(name)
            if prediction.shows_heatmap:
                browser.find_element(By.CSS_SELECTOR, ".heatmap-toggle summary").click()
                wait.until(lambda d: all(i["ok"] for i in loaded_images(d, ".heatmap-pair img")))
                assert prediction.heatmap_caption in browser.find_element(By.CSS_SELECTOR, ".heatmap-caption").text
                check_width(browser, f"{name} heat map", boxes)
                shoot(f"{name}-heat-map")
            else:
                assert not browser.find_elements(By.CSS_SELECTOR, ".heatmap-toggle")

        for name, path in (("5-history", "/history/"), ("6-queue", "/queue/")):
            browser.get(f"{live_server.url}{path}")
            assert PATIENT in browser.find_element(By.TAG_NAME, "main").text
            check_width(browser, name, boxes)
            check_axe(browser, name, findings)
            shoot(name)

        # The patient's lesions page: the pin placed above, linking to the timeline.
        browser.get(f"{live_server.url}/lesions/?patient={PATIENT}")
        pins = browser.find_elements(By.CSS_SELECTOR, "a.pin-link")
        assert [pin.get_attribute("aria-label") for pin in pins] == ["left shoulder (front)"]
        check_width(browser, "7-lesions", boxes)
        check_axe(browser, "7-lesions", findings)
        shoot("7-lesions")
        browser.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}));", pins[0])
        wait.until(ec.url_matches(rf"/lesions/{lesion.pk}/$"))
        assert len(browser.find_elements(By.CSS_SELECTOR, ".visit")) == 2
        check_width(browser, "8-timeline", boxes)
        check_axe(browser, "8-timeline", findings)
        shoot("8-timeline")

        # The referral letter, as the browser downloads it from the lesion's page.
        href = browser.find_element(By.PARTIAL_LINK_TEXT, "Referral letter").get_attribute("href")
        fetched = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch(arguments[0]).then(async r => { const b = new Uint8Array(await r.arrayBuffer()); let s = '';"
            " for (const x of b) s += String.fromCharCode(x);"
            " done({status: r.status, type: r.headers.get('Content-Type'), data: btoa(s)}); });",
            href,
        )
        assert (fetched["status"], fetched["type"]) == (200, "application/pdf")
        (artifacts_dir / "letter.pdf").write_bytes(base64.b64decode(fetched["data"]))
        if not shutil.which("pdftotext"):
            require_or_skip("pdftotext not found (apt-get install poppler-utils)")
        text = " ".join(
            subprocess.run(
                ["pdftotext", str(artifacts_dir / "letter.pdf"), "-"], check=True, capture_output=True, text=True
            ).stdout.split()
        )
        assert f"Patient reference: {PATIENT}" in text
        for number, prediction in enumerate((nevus, melanoma), start=1):
            prediction = Prediction.objects.select_related("upload").get(pk=prediction.pk)
            when = timezone.localtime(prediction.upload.created_at).strftime("%Y-%m-%d %H:%M")
            assert f"Photo {number}, {when} Outcome: {prediction.get_outcome_display()}" in text, text
        assert " ".join(wording.DISCLAIMER.split()) in text
    finally:
        keep_findings()

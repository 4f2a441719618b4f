"""The clinician's journey in real headless Chromium against a live server, with a real Celery worker running the real
model: sign up, verify, sign in, create a case, upload, wait for the probability, step through the slices.

Screenshots for the README (result.png, result-series.png, case.png, dashboard.png, model.png) are written only when
HEMO_SCREENSHOTS names a folder (e.g. docs/screenshots).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import save_screenshot, sign_in_with_session
from tests.conftest import PASSWORD, wait_for

pytestmark = pytest.mark.slow

PAGE_TIMEOUT = 20  # seconds for ordinary page loads
PREDICTION_TIMEOUT = 240  # the first prediction loads torch and the model in the worker


def wait(browser, timeout: float = PAGE_TIMEOUT) -> WebDriverWait:
    return WebDriverWait(browser, timeout)


def css(browser, selector: str):
    return browser.find_element(By.CSS_SELECTOR, selector)


def fill(browser, field_id: str, value: str) -> None:
    element = browser.find_element(By.ID, field_id)
    element.clear()
    element.send_keys(value)


def submit_and_wait_for_url(browser, button_selector: str, pattern: str, timeout: float = PAGE_TIMEOUT) -> None:
    css(browser, button_selector).click()
    wait(browser, timeout).until(EC.url_matches(pattern))


def wait_for_probability(browser) -> str:
    """The result page reloads itself (status polling) until the prediction finished; return the shown probability."""
    verdict = wait(browser, PREDICTION_TIMEOUT).until(
        lambda b: (
            b.find_elements(By.CSS_SELECTOR, "[data-testid=verdict][data-status=succeeded]")
            or b.find_elements(By.CSS_SELECTOR, "[data-testid=verdict][data-status=failed]")
        )
    )[0]
    assert verdict.get_attribute("data-status") == "succeeded", css(browser, "[data-testid=error-message]").text
    text = css(browser, "[data-testid=probability]").text
    assert re.fullmatch(r"([<>] )?\d{1,3}\.\d %", text), text
    return text


def image_loaded(browser, element) -> bool:
    return bool(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0;", element))


def upload_file(browser, path: Path) -> None:
    """Choose the file and submit: the page's script posts it with XHR (progress bar) and opens the result."""
    css(browser, "form[data-upload] input[type=file]").send_keys(str(path))
    wait(browser).until(lambda b: path.name in css(b, "[data-file-list]").text)
    submit_and_wait_for_url(browser, "[data-upload-submit]", r".*/predictions/[0-9a-f-]{36}/$", timeout=120)


def test_sign_up_verify_sign_in_create_case_upload_png_and_view_the_result(
    live_server, browser, celery_worker, mailoutbox, model_version, head_ct_png
):
    # Sign up: founds an organization; allauth sends a verification link.
    browser.get(f"{live_server.url}/accounts/signup/")
    fill(browser, "id_email", "dr.jones@example.org")
    fill(browser, "id_username", "drjones")
    fill(browser, "id_password1", PASSWORD)
    fill(browser, "id_password2", PASSWORD)
    fill(browser, "id_organization_name", "Riverside Stroke Unit")
    submit_and_wait_for_url(browser, "[data-testid=signup-form] button[type=submit]", r".*/accounts/confirm-email/$")
    assert "Check your email" in browser.page_source

    assert wait_for(lambda: len(mailoutbox) == 1, timeout=10)
    link = re.search(r"https?://\S+/accounts/confirm-email/\S+/", mailoutbox[0].body).group(0)
    browser.get(link)
    css(browser, "[data-testid=confirm-email]").click()
    wait(browser).until(EC.url_matches(r".*/accounts/login/$|.*/cases/$"))

    if "/accounts/login/" in browser.current_url:
        fill(browser, "id_login", "drjones")
        fill(browser, "id_password", PASSWORD)
        submit_and_wait_for_url(browser, "[data-testid=login-form] button[type=submit]", r".*/cases/$")
    nav = css(browser, "[data-testid=nav-user]").text
    assert "drjones" in nav and "Riverside Stroke Unit" in nav and "Clinician" in nav

    # Create a case.
    css(browser, "[data-testid=new-case]").click()
    wait(browser).until(EC.presence_of_element_located((By.ID, "id_patient_ref")))
    fill(browser, "id_patient_ref", "RSU-000042")
    fill(browser, "id_title", "Sudden headache")
    submit_and_wait_for_url(browser, "form.form button[type=submit]", r".*/cases/[0-9a-f-]{36}/$")
    assert "RSU-000042" in css(browser, "h1").text

    # Upload a real head CT PNG; the worker runs the model; the result page shows the probability.
    upload_file(browser, head_ct_png)
    wait_for_probability(browser)
    assert "Decision support, not a diagnosis" in browser.page_source
    assert css(browser, "[data-testid=slice-chart]").get_attribute("data-slices") == "1"

    # Slice viewer: the windowed slice, then the heat-map overlay, both served by permission-checked views.
    image = css(browser, "[data-testid=viewer-image]")
    wait(browser).until(lambda b: image_loaded(b, image))
    assert "/preview/" in image.get_attribute("src")
    css(browser, "[data-testid=overlay-toggle]").click()
    wait(browser).until(lambda b: "/heatmaps/0/" in image.get_attribute("src") and image_loaded(b, image))
    assert "heat map" in css(browser, "[data-testid=viewer-readout]").text
    save_screenshot(browser, "result.png")


def test_dicom_series_zip_shows_28_slice_probabilities(
    live_server, browser, celery_worker, model_version, clinician, ge_series_paths, head_ct_png, upload, tmp_path
):
    from inference.services import scan_submit
    from scans.services import case_create

    # Other cases of the organization, so that the dashboard shows each state (analysed by the worker meanwhile).
    case_create(user=clinician, patient_ref="HOSP-000777", title="Trauma, awaiting scan")
    other = case_create(user=clinician, patient_ref="HOSP-000512", title="Fall, anticoagulated")
    _, other_prediction = scan_submit(case=other, user=clinician, files=[upload(head_ct_png)])
    case = case_create(user=clinician, patient_ref="GE-000028", title="Head CT series (28 slices)")
    archive = tmp_path / "ge_head_series.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in ge_series_paths:  # shuffled: ingestion must restore the anatomical order
            zf.write(path, arcname=f"series/{path.name}")

    sign_in_with_session(browser, live_server.url, clinician)
    browser.get(f"{live_server.url}/cases/{case.pk}/")
    upload_file(browser, archive)
    wait_for_probability(browser)

    chart = css(browser, "[data-testid=slice-chart]")
    assert chart.get_attribute("data-slices") == "28"
    bars = browser.find_elements(By.CSS_SELECTOR, "[data-testid=slice-bar]")
    assert len(bars) == 28
    for bar in bars:
        assert 0.0 <= float(bar.get_attribute("data-probability")) <= 1.0
    assert browser.find_elements(By.CSS_SELECTOR, "[data-testid=threshold-line]")

    # Step through the slices with the buttons and the chart; the overlay follows the slice.
    readout = css(browser, "[data-testid=viewer-readout]")
    assert re.match(r"Slice \d+ / 28", readout.text)
    bars = browser.find_elements(By.CSS_SELECTOR, ".chart__bar")
    # A bar of the chart selects its slice (a synthetic click: WebDriver's hit test is unreliable on SVG shapes).
    browser.execute_script(
        "arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true, cancelable: true}))", bars[0]
    )
    wait(browser).until(lambda b: readout.text.startswith("Slice 1 / 28"))
    css(browser, "[data-viewer-next]").click()
    wait(browser).until(lambda b: readout.text.startswith("Slice 2 / 28"))
    slider = css(browser, "[data-viewer-slider]")
    browser.execute_script("arguments[0].value = '15'; arguments[0].dispatchEvent(new Event('input'));", slider)
    wait(browser).until(lambda b: readout.text.startswith("Slice 15 / 28"))
    css(browser, "[data-testid=overlay-toggle]").click()
    image = css(browser, "[data-testid=viewer-image]")
    wait(browser).until(lambda b: "/heatmaps/14/" in image.get_attribute("src") and image_loaded(b, image))

    # README screenshots (only when HEMO_SCREENSHOTS is set).
    save_screenshot(browser, "result-series.png")
    browser.get(f"{live_server.url}/cases/{case.pk}/")
    wait(browser).until(lambda b: b.find_elements(By.CSS_SELECTOR, "[data-testid=prediction-row]"))
    save_screenshot(browser, "case.png")
    other_prediction.refresh_from_db()
    assert other_prediction.is_finished
    browser.get(f"{live_server.url}/cases/")
    table = css(browser, "[data-testid=case-table]").text
    assert "GE-000028" in table and "HOSP-000512" in table and "Not analysed" in table
    save_screenshot(browser, "dashboard.png")
    browser.get(f"{live_server.url}/models/")
    assert model_version.sha256 in css(browser, "[data-testid=model-card]").text
    for selector in ("[data-testid=curves]", "[data-testid=roc]"):
        for element in browser.find_elements(By.CSS_SELECTOR, selector):
            browser.execute_script("arguments[0].loading = 'eager';", element)
            wait(browser).until(lambda b, e=element: image_loaded(b, e))
    save_screenshot(browser, "model.png")


def test_a_photo_is_refused_and_a_bone_window_image_is_analysed_with_a_warning(
    live_server, browser, celery_worker, model_version, clinician, tmp_path
):
    """The input check in the browser: a colour photo never reaches the model (the page says why and nothing is
    stored); a head CT in the wrong window is analysed, and its result carries the warning."""
    from scans.models import Scan
    from scans.services import case_create
    from tests.bad_uploads import picture_png
    from tests.phantoms import bone_window_png

    case = case_create(user=clinician, patient_ref="IC-000001", title="Input check")
    photo, bone = tmp_path / "holiday.png", tmp_path / "bone.png"
    photo.write_bytes(picture_png("chelsea"))
    bone.write_bytes(bone_window_png(256))
    sign_in_with_session(browser, live_server.url, clinician)
    browser.get(f"{live_server.url}/cases/{case.pk}/")

    css(browser, "form[data-upload] input[type=file]").send_keys(str(photo))
    wait(browser).until(lambda b: photo.name in css(b, "[data-file-list]").text)
    css(browser, "[data-upload-submit]").click()
    error = wait(browser).until(lambda b: b.find_elements(By.CSS_SELECTOR, "[data-upload-error] .alert--error"))[0]
    assert "This image does not look like a head CT slice: it is a colour picture" in error.text
    assert "/cases/" in browser.current_url and not Scan.objects.exists()

    browser.get(f"{live_server.url}/cases/{case.pk}/")
    upload_file(browser, bone)
    wait_for_probability(browser)
    warning = css(browser, "[data-testid=input-warning]").text
    assert "Unusual input." in warning and "no white skull rim" in warning


def test_admin_adds_a_colleague_on_the_members_page(live_server, browser, org_admin, mailoutbox):
    """An organization admin opens Members from the navigation and adds a colleague, who is mailed a link."""
    sign_in_with_session(browser, live_server.url, org_admin)
    browser.get(live_server.url + "/cases/")
    browser.find_element(By.LINK_TEXT, "Members").click()
    wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=member-add-form]")))
    fill(browser, "id_username", "nurse_lee")
    fill(browser, "id_email", "Lee@Riverside.example.org")
    # The page posts to itself and redirects back to itself: wait for the new member's row, not for a URL.
    css(browser, "[data-testid=member-add-form] button[type=submit]").click()
    wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=member-nurse_lee]")))
    assert "nurse_lee was added" in browser.page_source
    assert "invited: no password yet" in css(browser, "[data-testid=member-nurse_lee]").text
    assert wait_for(lambda: len(mailoutbox) == 1, timeout=10) and mailoutbox[0].to == ["lee@riverside.example.org"]
    save_screenshot(browser, "members.png")

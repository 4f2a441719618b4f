"""Real headless Chromium (Debian's build and driver) for page tests.

Selenium is given explicit binary and driver paths: without them Selenium Manager tries the network first.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("HEMO_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("HEMO_CHROMEDRIVER", "/usr/bin/chromedriver")

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--window-size=1280,1000",
)


@pytest.fixture(scope="session")
def chromium_paths() -> tuple[str, str]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        message = (
            f"Chromium ({CHROMIUM}) or ChromeDriver ({CHROMEDRIVER}) not found: "
            "install Debian's chromium and chromium-driver (.ci/run does)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture
def browser(chromium_paths: tuple[str, str]) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium_paths
    profile = tempfile.mkdtemp(prefix="hemo-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# --- helpers for the page tests ---------------------------------------------------------------------------------------

SCREENSHOT_MAX_BYTES = 300 * 1024


def sign_in_with_session(driver, base_url: str, user) -> None:
    """Sign `user` in without the form (the journey test covers the form): a session made by the test client."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    driver.get(f"{base_url}/static/css/hemo.css")  # any URL of the site, so the cookie gets its domain
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    driver.add_cookie({"name": settings.SESSION_COOKIE_NAME, "value": session, "path": "/"})


def save_screenshot(driver, name: str) -> Path | None:
    """Save a full-page PNG under $HEMO_SCREENSHOTS (for the README), palette-reduced to stay under 300 KB."""
    folder = os.environ.get("HEMO_SCREENSHOTS")
    if not folder:
        return None
    import io

    from PIL import Image

    width = 1280
    height = min(int(driver.execute_script("return document.documentElement.scrollHeight;")), 2200)
    driver.set_window_size(width, height + 140)  # the window includes browser chrome in headless mode too
    try:
        png = driver.get_screenshot_as_png()
    finally:
        driver.set_window_size(1280, 1000)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    path = Path(folder)
    if not path.is_absolute():
        path = Path(__file__).resolve().parent.parent.parent / path
    path.mkdir(parents=True, exist_ok=True)
    target = path / name
    for colors in (256, 128, 64, 32):
        buffer = io.BytesIO()
        image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(buffer, format="PNG", optimize=True)
        if buffer.tell() <= SCREENSHOT_MAX_BYTES:
            break
    target.write_bytes(buffer.getvalue())
    return target

"""A real headless Chromium (Debian's `chromium` + `chromium-driver`, installed by
scripts/install.sh) driven by Selenium, for the web page's tests.

Every test module here sets `pytestmark = pytest.mark.browser`: CI runs these
once, in the root pass (scripts/test.sh deselects them for the unprivileged pass).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} missing: run scripts/install.sh (Debian packages chromium, chromium-driver)"
    return None


@pytest.fixture(scope="session")
def chromium() -> Iterator["object"]:
    """One headless Chromium for the session; each test gets it through `browser`,
    which clears its cookies first so that no test inherits another's login."""
    reason = _missing()
    if reason:
        # A failure, not a skip: these tests are part of CI, and a machine
        # without the browser must not report them as passing.
        pytest.fail(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="sbx-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--window-size=1280,900", f"--user-data-dir={profile}",
                "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    if os.geteuid() == 0:
        # Chromium refuses to run as root with its own sandbox on; the page under
        # test is ours, served on 127.0.0.1.
        opts.add_argument("--no-sandbox")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    downloads = tempfile.mkdtemp(prefix="sbx-downloads-")
    opts.add_experimental_option("prefs", {
        "download.default_directory": downloads,
        "download.prompt_for_download": False,
    })
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.downloads_dir = downloads  # type: ignore[attr-defined]
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(downloads, ignore_errors=True)


@pytest.fixture
def browser(chromium):
    chromium.delete_all_cookies()
    chromium.get_log("browser")  # drop what an earlier test left in the console
    for name in os.listdir(chromium.downloads_dir):
        os.unlink(os.path.join(chromium.downloads_dir, name))
    chromium.set_window_size(1280, 900)
    return chromium


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real `sandbox serve` on 127.0.0.1 (tests/service/server.py), one per module."""
    from service.server import make_server

    from .helpers import UiServer
    s = make_server(tmp_path_factory.mktemp("ui-server")).start()
    try:
        yield UiServer(s)
    finally:
        s.stop()

"""Everything a run produced is text on the page, never markup or script.

A run prints and creates files named like HTML that runs script, a
`javascript:` URL and terminal escapes; the run's argv and labels (the
submitter's data) carry the same. The browser must run none of it: judged
from the browser itself (a global the payloads would set, the console, the
DOM), not from the HTML source.
"""
from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from .helpers import console, login, wait_for

pytestmark = pytest.mark.browser

MARK = "XSS-FIRED"
PAYLOADS = [
    f'<img src=x onerror="window.__xss=1;console.log(\'{MARK}\')">',
    f"<script>window.__xss=2;console.log('{MARK}')</script>",
    f'<a id="jslink" href="javascript:window.__xss=3">click</a>',
    f'<svg onload="window.__xss=4"></svg>',
    "\x1b]0;retitled\x07\x1b[2J\x1b[31mred\r",
]
HOSTILE_NAME = '<img src=x onerror=window.__xss=5>'


def _script() -> str:
    lines = "".join(f"printf '%s\\n' '{p.replace(chr(39), chr(39) + chr(92) + chr(39) + chr(39))}'; "
                    for p in PAYLOADS)
    return (lines + "printf '%s\\n' '" + PAYLOADS[0].replace("'", "'\\''") + "' >&2; "
            f"echo hostile > \"$SANDBOX_OUTPUT/{HOSTILE_NAME}\"; "
            "echo 'javascript:alert(1)' > \"$SANDBOX_OUTPUT/javascript:alert(1)\"; "
            "cat /etc/shadow; true")


def _assert_inert(driver) -> None:
    assert driver.execute_script("return window.__xss === undefined") is True
    planted = driver.execute_script(
        "return Array.from(document.querySelectorAll("
        "'img, svg [onload], [onerror], [onload], script:not([src]), a[href^=\"javascript:\"], #jslink'"
        ")).map(e => e.outerHTML)")
    assert planted == []
    logs = console(driver)
    assert not [e for e in logs if MARK in e.get("message", "")]
    # A blocked inline script or handler would be reported by the CSP: there
    # must be nothing for it to block.
    assert not [e for e in logs if "Content Security Policy" in e.get("message", "")], logs


def test_hostile_run_output_renders_as_text(browser, server):
    run = server.submit({"argv": ["/bin/sh", "-c", _script()],
                         "labels": {"note": PAYLOADS[0]}})
    done = server.wait(run["id"])
    assert done["status"] == "ok", done.get("reason")
    login(browser, server)
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'tr[data-run-id="{run["id"]}"]'))
    _assert_inert(browser)

    browser.get(f"{server.url}/ui/runs/{run['id']}")
    stdout = browser.find_element(By.ID, "stdout").text
    # the payloads are on the page, as text
    assert PAYLOADS[0] in stdout and PAYLOADS[1] in stdout and "javascript:window.__xss=3" in stdout
    # terminal escapes are shown as escapes, not passed to the page raw
    assert "\\u001b]0;retitled\\u0007" in stdout and "\x1b" not in stdout
    assert PAYLOADS[0] in browser.find_element(By.ID, "stderr").text
    _assert_inert(browser)

    browser.get(f"{server.url}/ui/runs/{run['id']}/audit")
    _assert_inert(browser)


"""Helpers of the browser tests: the console, axe-core, logging in, waiting,
and the few API calls the page tests make."""
from __future__ import annotations

import json
from pathlib import Path

AXE_JS = Path(__file__).with_name("vendor") / "axe.min.js"


def console(driver) -> list[dict]:
    """The browser console since the last call (errors, CSP reports, logs)."""
    return driver.get_log("browser")


def axe_serious(driver) -> list[dict]:
    """Run axe-core (vendored, see vendor/README.md) on the current page and
    return the violations of impact serious or critical."""
    source = AXE_JS.read_text()
    # WebDriver's script evaluation is not subject to the page's CSP, so the
    # page keeps its strict policy while the test injects axe.
    driver.execute_script(source + "\n;window.__axeLoaded = true;")
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(r => done(JSON.stringify(r.violations)))"
        ".catch(e => done(JSON.stringify([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}])));")
    violations = json.loads(result)
    return [v for v in violations if v.get("impact") in ("serious", "critical")]


class UiServer:
    """tests/service's real `sandbox serve`, plus the few API calls the page tests make."""

    def __init__(self, server) -> None:
        self.server = server
        self.url = server.url
        self.admin_token = server.admin_token
        self.state = server.state

    def api(self, method: str, path: str, body: object = None, token: str | None = None,
            timeout: float = 60.0):
        import httpx
        resp = httpx.request(method, self.url + path, json=body, timeout=timeout,
                             headers=self.server.auth(token))
        resp.raise_for_status()
        return resp.json() if resp.content else {}

    def submit(self, body: dict, token: str | None = None) -> dict:
        return self.api("POST", "/v1/runs", body, token)

    def wait(self, run_id: str, seconds: float = 60.0) -> dict:
        return self.api("GET", f"/v1/runs/{run_id}?wait={seconds}", timeout=seconds + 30)


def login(driver, server, token: str | None = None) -> None:
    """Log in through the form, as a person would."""
    from selenium.webdriver.common.by import By
    driver.get(server.url + "/ui/login")
    driver.find_element(By.ID, "token").send_keys(token or server.admin_token)
    driver.find_element(By.CSS_SELECTOR, "form.stack button[type=submit]").click()
    from selenium.common.exceptions import TimeoutException
    try:
        wait_for(driver, lambda d: d.current_url.endswith("/ui/runs"), 120)
    except TimeoutException:
        raise AssertionError(f"login did not reach /ui/runs: at {driver.current_url}: "
                             + driver.find_element(By.TAG_NAME, "body").text[:500]) from None


def wait_for(driver, predicate, timeout: float = 60.0):
    from selenium.common.exceptions import (NoSuchElementException,
                                            StaleElementReferenceException,
                                            WebDriverException)
    from selenium.webdriver.support.ui import WebDriverWait

    def checked(d):
        # Chromium reports an element of a document that a navigation has just
        # replaced (a form POST answered with a redirect) as an "unknown error",
        # not as a stale reference: it is the same thing, so it is retried the
        # same way; every other driver error still ends the wait.
        try:
            return predicate(d)
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                raise StaleElementReferenceException(str(exc)) from exc
            raise
    # the live list replaces its rows: an element found a moment ago may be gone
    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=(NoSuchElementException,
                                             StaleElementReferenceException)).until(checked)

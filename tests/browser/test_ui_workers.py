"""The workers and queues page (issue 17 item 4) in a real headless Chromium,
against a real cluster on this machine: redis-server, `sandbox serve
--broker` and two `sandbox worker`s."""
from __future__ import annotations

import os
import time

import pytest
from selenium.webdriver.common.by import By

from sandbox.service.scaleout.local import Redis, Worker

from .helpers import UiServer, axe_serious, console, login, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.redis]
SHOTS = os.environ.get("SANDBOX_UI_SCREENSHOTS")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from service.server import make_server
    root = tmp_path_factory.mktemp("ui-workers")
    redis = Redis(dir=str(root / "redis")).start()
    srv = make_server(root / "srv", "--broker", redis.url).start()
    workers = [Worker(redis.url, root / f"w{i}", f"host-{i}", ["--concurrency", "1"]).start()
               for i in range(2)]
    try:
        yield UiServer(srv)
    finally:
        for w in workers:
            w.stop()
        srv.stop()
        redis.stop()


def test_workers_page_shows_hosts_queues_and_leases(browser, cluster, tmp_path):
    server = cluster
    run = server.submit({"argv": ["sleep", "30.25"], "policy": "default"})
    deadline = time.monotonic() + 120
    while not any(lease["run_id"] == run["id"] and lease["lease_ttl_ms"]
                  for lease in server.api("GET", "/v1/workers")["leases"]):
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.2)
    try:
        login(browser, server)
        console(browser)
        browser.get(server.url + "/ui/admin/workers")
        from selenium.common.exceptions import TimeoutException
        try:
            wait_for(browser, lambda d: d.refresh() or (
                "host-1" in d.find_element(By.ID, "workers").text
                and "host-0" in d.find_element(By.ID, "workers").text), 60)
        except TimeoutException:
            raise AssertionError(browser.find_element(By.TAG_NAME, "main").text) from None
        leases = browser.find_element(By.ID, "leases").text
        assert run["id"] in leases and "none" not in leases.split(run["id"])[1].split("\n")[0]
        assert "default" in browser.find_element(By.ID, "queues").text
        assert axe_serious(browser) == []
        assert [e for e in console(browser) if e.get("level") == "SEVERE"] == []
        shots = SHOTS or str(tmp_path)
        os.makedirs(shots, exist_ok=True)
        browser.save_screenshot(os.path.join(shots, "ui-workers.png"))
    finally:
        server.api("POST", f"/v1/runs/{run['id']}/cancel")

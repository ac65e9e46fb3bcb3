"""What the launcher keeps about messages it did not act on is bounded (attack probe).

A handler error and a frame inbound middleware rejected are each a record in the
RunResult, and the child decides how many there are and what their text holds.
Uncharged, 99,000 14-byte frames to a raising handler were +156 MB of launcher
memory (40 MB of result JSON), and 200 bad-MAC frames with 1 MB type names under
HmacAuth +1.2 GB. Judged from the launcher: the records kept for the result stay
small, what was not kept is counted in `RunResult.clipped`, and records the
trusted side adds after the run (an after_spawn hook's error) are still kept.
"""
from __future__ import annotations

import json

import pytest

from sandbox.launcher.launcher import Launcher
from sandbox.launcher.records import MAX_RECORDS

pytestmark = pytest.mark.isolation

PRE = "import os, struct\nfd = int(os.environ['SANDBOX_IPC_FD'])\n"
KEPT_BOUND = 1 << 20   # bytes of JSON for a list of records, whatever the child sent


def _long_names(n: int, extra: str = "") -> str:
    """A child sending `n` frames of distinct 100 KB type names (and `extra` fields)."""
    return PRE + (f"for i in range({n}):\n"
                  "    body = ('{\"type\":\"%03d' % i + 'x' * 100_000 + '\"' + "
                  f"{extra!r} + '}}').encode()\n"
                  "    os.write(fd, struct.pack('>I', len(body)) + body)\n")


def test_a_flood_of_handler_errors_keeps_a_bounded_record(py):
    la = Launcher(capture_output=True)

    def bad(msg, info):
        raise ValueError("nope")

    def bad_after(result, info):
        raise RuntimeError("after the run")

    la.on("x", bad)
    la.after_spawn(bad_after)
    code = PRE + ("body = b'{\"type\":\"x\"}'\nf = struct.pack('>I', len(body)) + body\n"
                  "os.write(fd, f * 20000)\n")
    r = la.spawn([py, "-I", "-c", code])
    assert r.status == "ok", (r.status, r.reason)
    assert r.messages == {"x": 20000}
    assert len(json.dumps(r.handler_errors)) < KEPT_BOUND
    kept = [e for e in r.handler_errors if e.get("message_type") == "x"]
    assert len(kept) + r.clipped["handler_errors"] == 20000, (len(kept), r.clipped)
    assert any(e.get("stage") == "after_spawn" for e in r.handler_errors)


def test_rejected_frames_keep_a_bounded_record(py):
    from sandbox.middleware import HmacAuth
    la = Launcher(capture_output=True)
    la.use(HmacAuth)
    r = la.spawn([py, "-I", "-c", _long_names(150, ',"mac":"0"')])
    assert r.status == "ok", (r.status, r.reason)
    assert len(json.dumps(r.rejected)) < KEPT_BOUND
    assert len(r.rejected) == MAX_RECORDS and r.clipped["rejected"] == 150 - MAX_RECORDS
    assert r.metrics["auth"]["rejected"] == 150
    assert all("MAC does not verify" in e["message"] for e in r.rejected)


def test_metrics_keeps_a_bounded_number_of_type_names(py):
    """Metrics counts per type name, and sees frames an inner middleware then drops or
    rejects (which the run's retained budget never charges): registered after a
    filter, it kept 150 distinct 100 KB names, 30 MB of JSON, growing with the byte budget."""
    from sandbox.middleware import Metrics, transform
    la = Launcher(capture_output=True)
    la.use(transform(inbound=lambda t, p: None, name="drop_all"))   # drops everything
    la.use(Metrics)
    r = la.spawn([py, "-I", "-c", _long_names(150)])
    assert r.status == "ok", (r.status, r.reason)
    counted = r.metrics["messages"]["in"]
    assert sum(counted.values()) == 150, counted.keys()
    assert len(json.dumps(r.metrics)) < KEPT_BOUND

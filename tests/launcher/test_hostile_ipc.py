"""Hostile children on the IPC descriptor: garbage, oversized frames, floods, lies.

Each ends as a RunResult with a reason; the launcher stays healthy and its
memory bounded (the frame limit is checked from the header, before buffering).
"""
from __future__ import annotations

import resource

import pytest

from sandbox.launcher.launcher import Launcher
from sandbox.launcher.session import Budget

pytestmark = pytest.mark.isolation

PRELUDE = "import os, struct, json\nfd = int(os.environ['SANDBOX_IPC_FD'])\n"


def frame(obj) -> str:
    return f"(lambda b: struct.pack('>I', len(b)) + b)(json.dumps({obj!r}).encode())"


def run_child(launcher, py, body: str, **kw):
    return launcher.spawn([py, "-I", "-c", PRELUDE + body], **kw)


def test_garbage_bytes_are_a_violation(launcher, py):
    r = run_child(launcher, py, "os.write(fd, struct.pack('>I', 5) + b'{{{{{')")
    assert r.status == "violation" and "not UTF-8 JSON" in r.reason


def test_a_frame_without_type_is_a_violation(launcher, py):
    r = run_child(launcher, py, f"os.write(fd, {frame({'payload': 1})})")
    assert r.status == "violation" and "'type'" in r.reason


def test_oversized_frame_is_refused_from_its_header(py):
    launcher = Launcher(budget=Budget(max_frame=4096), capture_output=True)
    # announces 1 GiB: the launcher must refuse without trying to buffer it
    r = run_child(launcher, py, "os.write(fd, struct.pack('>I', 1 << 30) + b'x' * 65536)")
    assert r.status == "violation" and "over the 4096-byte limit" in r.reason


def test_truncated_frame_at_exit_is_a_violation(launcher, py):
    r = run_child(launcher, py, "os.write(fd, struct.pack('>I', 100) + b'{\"type\"')")
    assert r.status == "violation" and "inside a frame" in r.reason


def test_flood_hits_the_message_budget_and_the_child_is_killed(py):
    launcher = Launcher(budget=Budget(max_messages=1000), capture_output=True)
    body = f"f = {frame({'type': 'spam', 'payload': 1})}\nwhile True: os.write(fd, f * 100)\n"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = run_child(launcher, py, body, timeout=60)
    assert r.status == "violation" and "budget" in r.reason
    assert r.messages.get("spam", 0) <= 1000
    # bounded: nothing close to the flood's size was retained (ru_maxrss is KiB)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024


def test_malformed_store_put_is_a_violation_not_a_crash(launcher, py):
    r = run_child(launcher, py, f"os.write(fd, {frame({'type': 'store_put', 'payload': 3})})")
    assert r.status == "violation" and "store_put" in r.reason


def test_nan_is_not_json(launcher, py):
    r = run_child(launcher, py,
                  "b=b'{\"type\":\"x\",\"payload\":NaN}'\nos.write(fd, struct.pack('>I', len(b))+b)")
    assert r.status == "violation"


def test_child_crash_is_reported_with_its_signal(launcher, py):
    r = run_child(launcher, py, "import ctypes; ctypes.string_at(0)")
    assert r.status == "signaled" and r.signal == 11


def test_stdout_never_carries_protocol(launcher, py):
    # a stray print of something that looks like a frame is just output
    fake = "{\"type\": \"store_put\", \"payload\": {\"key\": \"k\", \"value\": 1}}"
    r = run_child(launcher, py, f"print({fake!r})", store={"k": 0})
    assert r.status == "ok" and r.store == {"k": 0} and "store_put" in r.stdout


def test_launcher_survives_and_runs_again_after_hostile_children(launcher, py):
    run_child(launcher, py, "os.write(fd, b'\\xff' * 100)")
    assert launcher.spawn(["true"]).status == "ok"

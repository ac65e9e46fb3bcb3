"""Issue 11, finding 1: nothing the sandbox sends grows the monitor's memory.

open() of new ~4 KiB paths of ~2,000 components made the audit resolver cache
every prefix (~4 MiB a call: 626 MiB after 150 calls). Judged from the
monitor's own /proc (VmHWM) while the sandbox waits at the end of its work,
against the same run with short paths.
"""
from __future__ import annotations

import time
from dataclasses import replace

import pytest

pytestmark = pytest.mark.isolation

CALLS = 150

HOSTILE = r"""
import os, sys, time
out, n, long_ = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
for i in range(n):
    tail = "a/" * 2030 if long_ else "a"
    for p in (f"/tmp/q{i}/" + tail, f"{out}/q{i}/" + tail):
        try:
            os.open(p, os.O_RDONLY)
        except OSError:
            pass
open(out + "/done", "w").close()
deadline = time.time() + 60
while not os.path.exists(out + "/seen") and time.time() < deadline:
    time.sleep(0.02)
"""


def _hwm(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _monitor_peak(tmp_path, py, name: str, guarded: bool, long_: bool) -> tuple[int, dict]:
    from sandbox.launcher.launcher import Launcher
    from sandbox.policy import load_policy
    out = tmp_path / name
    out.mkdir()
    pol = load_policy("default" if guarded else "strict")
    # a writable host tree the test can watch (${OUTPUT} is a private tmpfs until the end)
    pol = pol.replace(filesystem=replace(pol.filesystem,
                                         write=(*pol.filesystem.write, str(out))))
    if guarded:
        pol = pol.replace(filesystem=replace(pol.filesystem,
                                             deny=pol.filesystem.deny + (f"{out}/*.pem",)))
    la = Launcher(capture_output=True)
    la.audit_db = str(tmp_path / f"{name}.sqlite")
    h = la.start([py, "-I", "-c", HOSTILE, str(out), str(CALLS), "1" if long_ else "0"],
                 policy=pol, output_dir=str(tmp_path / f"{name}-output"), timeout=120)
    deadline = time.time() + 120
    while not (out / "done").exists() and time.time() < deadline:
        time.sleep(0.05)
    peak = _hwm(h.pid)
    (out / "seen").touch()
    r = h.wait()
    assert r.status == "ok", (r.status, r.reason, r.stderr[-2000:])
    return peak, r.audit


@pytest.mark.parametrize("guarded", [False, True], ids=["strict", "guarded"])
def test_long_paths_do_not_grow_the_monitor(tmp_path, py, guarded):
    base, _ = _monitor_peak(tmp_path, py, "short", guarded, long_=False)
    peak, audit = _monitor_peak(tmp_path, py, "long", guarded, long_=True)
    assert audit["checked"] >= 2 * CALLS
    if guarded:
        assert audit["brokered"] >= 2 * CALLS
    grew = peak - base
    assert grew < 24 << 20, f"the monitor grew {grew >> 20} MiB for {CALLS} long paths"

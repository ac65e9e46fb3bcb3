"""Issue 11: eight hostile sandboxes next to eight well-behaved ones, all at once.

Each hostile run does one of the things a sandbox could make the trusted side
pay for: long paths for the monitor's resolver, CPU split over processes,
the user's inotify instances, the caller's stdio, a flood of denials for the
exit report, monitor work, garbage on the IPC descriptor, orphans. Judged
from outside: every well-behaved run ends `ok` with a complete audit (every
event stored, nothing dropped or truncated), and the launcher's and the
monitors' memory stays under the bounds stated in docs/threat-model.md.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os

import pytest

pytestmark = [pytest.mark.isolation, pytest.mark.slow]

LAUNCHER_GROWTH_MAX = 256 << 20      # the launcher, for all sixteen runs together
MONITOR_PEAK_MAX = 160 << 20         # each run's monitor (or broker) peak RSS

HOSTILE = {
    "long-paths": r"""
import os
for i in range(150):
    for p in (f"/tmp/q{i}/" + "a/" * 2030, f"/q{i}/" + "a/" * 2030):
        try: os.open(p, os.O_RDONLY)
        except OSError: pass
""",
    "cpu-split": r"""
import os
for _ in range(3):
    if os.fork() == 0:
        while True: pass
while True: pass
""",
    "inotify": r"""
import ctypes, time
libc = ctypes.CDLL(None, use_errno=True)
fds = []
while True:
    fd = libc.inotify_init1(0)
    if fd < 0: break
    fds.append(fd)
time.sleep(3)
""",
    "stdio-tamper": r"""
import fcntl, os
for fd in (0, 1, 2):
    for op in (lambda: os.ftruncate(fd, 0), lambda: os.fchmod(fd, 0),
               lambda: os.utime(fd, (0, 0)), lambda: fcntl.flock(fd, fcntl.LOCK_EX)):
        try: op()
        except OSError: pass
print("tried")
""",
    "denied-flood": r"""
import os
for i in range(1500):
    try: os.open("/nonexistent-%d/" % i + "x" * 3500, os.O_RDONLY)
    except OSError: pass
""",
    "monitor-work": r"""
import os, time
end = time.time() + 3
i = 0
while time.time() < end:
    p = "/tmp/w%d/" % i + "b/" * 2000
    for f in (os.unlink, os.stat):
        try: f(p)
        except OSError: pass
    i += 1
""",
    "ipc-garbage": r"""
import os
fd = int(os.environ.get("SANDBOX_IPC_FD", "3"))
try:
    os.write(fd, b"\xff\xff\xff\x7f" + os.urandom(4096))
except OSError:
    pass
""",
    "orphans": r"""
import os
for _ in range(300):
    try:
        if os.fork() == 0:
            if os.fork() == 0:
                os._exit(0)
            os._exit(0)
    except OSError:
        pass
""",
}

GOOD = r"""
import os, sys
with open("/etc/hostname") as f:
    f.read()
names = sorted(os.listdir("/usr/lib"))[:20]
with open(os.path.join(sys.argv[1], "ok.txt"), "w") as f:
    f.write(str(len(names)))
print("fine")
"""


def _vm(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(field)


def test_well_behaved_runs_are_unharmed_by_hostile_neighbours(tmp_path, py):
    from sandbox.launcher.launcher import Launcher
    from sandbox.policy import load_policy
    strict = load_policy("strict")
    tight = strict.replace(limits=dataclasses.replace(strict.limits, cpu=2.0, wall=30.0))
    with open("/proc/self/clear_refs", "w") as f:   # 5: the peak from now on (a test
        f.write("5")                                 # before it in this process counted)
    base = _vm("VmRSS")
    jobs = [(f"hostile-{name}", [py, "-I", "-S", "-c", code], tight)
            for name, code in HOSTILE.items()]
    jobs += [(f"good-{i}", [py, "-I", "-S", "-c", GOOD, "/tmp"], strict) for i in range(8)]
    with Launcher(capture_output=True, max_concurrent=len(jobs),
                  audit_db=str(tmp_path / "audit")) as la:
        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
            futures = {name: pool.submit(la.spawn, argv, policy=pol, timeout=60,
                                         output_dir=str(tmp_path / name))
                       for name, argv, pol in jobs}
            results = {name: f.result() for name, f in futures.items()}
    grew = _vm("VmHWM") - base
    for name, r in results.items():
        assert r.monitor_peak_memory <= MONITOR_PEAK_MAX, (name, r.monitor_peak_memory)
        if not name.startswith("good"):
            continue
        assert (r.status, r.stdout) == ("ok", "fine\n"), (name, r.status, r.reason, r.stderr)
        a = r.audit
        assert a["records"] > 0 and a["dropped"] == 0 and not a.get("truncated"), (name, a)
        assert a["stored_events"] + a["not_stored"] + a["dropped"] == a["records"], (name, a)
    # the hostile ones ended as the sandbox's limits say, never taking the launcher down
    assert results["hostile-cpu-split"].status == "limit_exceeded", results["hostile-cpu-split"]
    assert results["hostile-ipc-garbage"].status == "violation"
    assert results["hostile-stdio-tamper"].stdout == "tried\n"
    assert grew <= LAUNCHER_GROWTH_MAX, f"the launcher grew {grew >> 20} MiB"
    assert os.path.isdir(tmp_path)

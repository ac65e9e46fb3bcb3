"""Per-uid kernel resources are bounded per sandbox (issue 11.9).

inotify instances (and watches, fanotify, namespaces, message queues, pending
signals) are counted per user, and a sandbox runs as its caller's uid: before
the fix sandbox A took all 128 inotify instances of the uid, and the host user
and a second sandbox got EMFILE until A ended. Now each sandbox's user
namespace has its own lower maximum (charged hierarchically, so its share is
bounded). Judged from the host: while A holds everything it could get, the
host user can still create an instance, and so can a second sandbox.
"""
from __future__ import annotations

import ctypes
import dataclasses
import os
import sys
import time

import pytest

from sandbox.isolation import limits
from sandbox.policy.loader import load_policy

pytestmark = pytest.mark.isolation

EXHAUST = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
fds = []
while len(fds) < 100000:
    fd = libc.inotify_init1(0)
    if fd < 0:
        break
    fds.append(fd)
out = sys.argv[1]
with open(os.path.join(out, "count.tmp"), "w") as f:
    f.write(f"{len(fds)} {ctypes.get_errno()}")
os.rename(os.path.join(out, "count.tmp"), os.path.join(out, "count"))
deadline = time.monotonic() + 120
while not os.path.exists(os.path.join(out, "release")) and time.monotonic() < deadline:
    time.sleep(0.02)
"""

ONE = r"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
print("ok" if fd >= 0 else f"errno {ctypes.get_errno()}")
"""


def _host_inotify() -> int:
    """0 when this (host) process can create an inotify instance, else the errno."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(0)
    if fd < 0:
        return ctypes.get_errno()
    os.close(fd)
    return 0


def test_one_sandbox_cannot_take_the_users_inotify_instances(launcher, tmp_path):
    out = tmp_path / "a"
    out.mkdir()
    os.chmod(tmp_path, 0o755)
    # a host tree the test can watch while A runs (${OUTPUT} is private until the end)
    pol = load_policy("default")
    pol = pol.replace(filesystem=dataclasses.replace(pol.filesystem,
                                                     write=(*pol.filesystem.write, str(out))))
    a = launcher.start([sys.executable, "-c", EXHAUST, str(out)], policy=pol)
    try:
        for _ in range(6000):
            if (out / "count").exists() or a.result() is not None:
                break
            time.sleep(0.02)
        assert (out / "count").exists(), a.wait(1)
        got, errno_ = map(int, (out / "count").read_text().split())
        assert got >= 1 and errno_ in (24, 23), (got, errno_)   # stopped by a limit
        assert _host_inotify() == 0, "the host user could not create an inotify instance"
        b = launcher.spawn([sys.executable, "-c", ONE], policy="default")
        assert (b.status, b.stdout.strip()) == ("ok", "ok"), (b.status, b.stdout, b.stderr)
        assert a.result() is None, "A ended before the checks: they proved nothing"
    finally:
        (out / "release").touch()
        res = a.wait(120)
    assert res.status == "ok", (res.status, res.reason, res.stderr)


def test_user_ns_caps_are_a_share_of_the_parents():
    caps = limits.user_ns_caps()
    with open("/proc/sys/user/max_inotify_instances") as f:
        host = int(f.read())
    assert 1 <= caps["max_inotify_instances"] <= max(1, host // limits.USER_NS_SHARE)
    assert all(v >= 1 for v in caps.values())

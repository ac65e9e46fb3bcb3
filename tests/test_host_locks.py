"""Leases and locks on host files the view shares (probe 1, F5).

The view's binds share the host's inodes, so a lease or a lock taken inside acts
on the host's file. A read lease on a file the caller owns made every host open
for writing wait until the run ended (or `fs.lease-break-time`); read locks on
`/var/lib/dpkg/lock*` (the system view shows `/var/lib/dpkg`) made a root
caller's apt and dpkg fail for the run's life.

Judged from the host while the sandbox's program holds what it got: a host open
for writing with O_NONBLOCK fails at once (EWOULDBLOCK) while a lease is held,
and F_OFD_GETLK names any lock on the dpkg files.
"""
from __future__ import annotations

import fcntl
import os
import struct

import pytest

from test_host_pools import BUILTINS, Held

pytestmark = pytest.mark.isolation

TAKE_LEASE = """
import fcntl, json, os, signal, sys
signal.signal(signal.SIGIO, signal.SIG_IGN)
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    got = "lease"
except OSError as e:
    got = e.errno
print(json.dumps({"got": got}), flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("policy", BUILTINS)
def test_a_lease_never_stalls_a_host_writer(policy, tmp_path):
    """The file is the caller's own, in the work directory (granted to `base` by hand)."""
    os.chmod(tmp_path, 0o755)
    target = tmp_path / "own.txt"
    target.write_text("topsecret\n")
    with Held(policy, TAKE_LEASE, str(target), workdir=str(tmp_path),
              opts=("--read", str(tmp_path))) as got:
        try:
            os.close(os.open(target, os.O_WRONLY | os.O_NONBLOCK))
            blocked = None
        except BlockingIOError as exc:
            blocked = exc.errno
    assert blocked is None, f"a host writer would wait under {policy}: {got}"
    assert got["got"] == 1, got   # EPERM: F_SETLEASE is refused


DPKG_LOCKS = ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock", "/var/lib/dpkg/triggers/Lock")

TAKE_LOCKS = """
import fcntl, json, os, sys
got = {}
for p in sys.argv[1:]:
    try:
        fd = os.open(p, os.O_RDONLY)
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        got[p] = "locked"
    except OSError as e:
        got[p] = e.errno
print(json.dumps(got), flush=True)
sys.stdin.read()
"""
F_OFD_GETLK = 36
_FLOCK = "hhqqi4x"   # struct flock on x86_64


def host_lock_on(path: str) -> int:
    """F_UNLCK when no process holds a lock that would stop a writer of `path`."""
    fd = os.open(path, os.O_RDONLY)
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        return struct.unpack(_FLOCK, fcntl.fcntl(fd, F_OFD_GETLK, query))[0]
    finally:
        os.close(fd)


@pytest.mark.parametrize("policy", ["strict", "default", "build"])
def test_the_package_manager_locks_stay_the_hosts(policy):
    """A root caller's sandbox may read /var/lib/dpkg, not lock apt and dpkg out."""
    present = [p for p in DPKG_LOCKS if os.access(p, os.R_OK)]
    if not present:
        pytest.skip("the caller cannot read the dpkg lock files (their host locks are "
                    "out of its reach inside as outside)")
    assert all(host_lock_on(p) == fcntl.F_UNLCK for p in present), "locked before the run"
    with Held(policy, TAKE_LOCKS, *present) as got:
        held = {p: host_lock_on(p) for p in present}
    assert all(v == fcntl.F_UNLCK for v in held.values()), (held, got)

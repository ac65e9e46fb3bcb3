"""Where a workload under a built-in policy is *expected* to differ from its direct run.

Two lists, both reviewed by people and both checked by tests/compat/test_compat.py:

- `INTENDED`: the policy does what it promises (no network, tight limits).
  The workload must then fail *loudly* (a different exit status), never
  silently with exit 0 and wrong output. Each entry is documented in
  docs/compatibility.md.
- `KNOWN_BROKEN`: a defect with an open issue. The test is a strict xfail:
  once the defect is fixed the test XPASSes, which fails the suite, so the
  entry must be removed in the same change that fixes it.
"""
from __future__ import annotations

POLICIES = ("strict", "default")

INTENDED: dict[tuple[str, str], str] = {
    (w, p): why for p in POLICIES for w, why in {
        "loopback-tcp": "network = \"none\": no TCP at all, loopback included "
                        "(Landlock TCP rules; use mode = \"loopback\")",
    }.items()
}

_ISSUE12 = "issue 12 (runner semantics)"
_ISSUE13 = "issue 13 (everyday programs)"
KNOWN_BROKEN: dict[tuple[str, str], str] = {
    (w, p): why for p in POLICIES for w, why in {
        "env-user": f"{_ISSUE13}: USER and LOGNAME are unset",
        "home-passwd": f"{_ISSUE13}: HOME disagrees with the passwd view",
        "bash-u": f"{_ISSUE13}: USER is unset",
        "hostname": f"{_ISSUE13}: the sandbox's host name does not resolve",
        "ls-root": f"{_ISSUE13}: / is not listable",
        "dpkg-list": f"{_ISSUE13}: /var/lib/dpkg is not in the view",
        "dpkg-status": f"{_ISSUE13}: /var/lib/dpkg is not in the view",
        "lscpu": f"{_ISSUE13}: /sys is not in the view",
        "cgroup-visible": f"{_ISSUE13}: /sys/fs/cgroup is not in the view",
        "pty": f"{_ISSUE13}: no /dev/pts",
        "script-cmd": f"{_ISSUE13}: no /dev/pts",
        "workdir-write": f"{_ISSUE13}: the work directory is read-only (no copy-on-write)",
        "git-init": f"{_ISSUE13}: the work directory is read-only (no copy-on-write)",
        "make-intree": f"{_ISSUE13}: the work directory is read-only (no copy-on-write)",
        "run-script": f"{_ISSUE13}: no exec right on the work directory",
        "gcc-run": f"{_ISSUE13}: nothing writable is executable",
        "venv-pip": f"{_ISSUE13}: the venv's pip is on noexec /tmp; the shell runs the system pip",
        "pip-local": f"{_ISSUE13}: nothing writable is executable",
    }.items()
}

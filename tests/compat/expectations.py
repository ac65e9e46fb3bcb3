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
for _w in ("run-script", "run-exec"):
    INTENDED[(_w, "strict")] = ("strict grants no exec on the work directory (default and build "
                                "do); the exec is refused with exit 126 and a hint")

# Where a memory limit is only an address-space limit (RLIMIT_AS: no writable
# memory cgroup, as for an unprivileged caller on this machine), runtimes that
# reserve large virtual ranges up front cannot start under strict's 512 MiB.
# Honest, and loud; with a memory cgroup (root here) they run.
INTENDED_UNDER_RLIMIT_AS: dict[tuple[str, str], str] = {
    ("java", "strict"): "memory = 512MiB as RLIMIT_AS (no memory cgroup): the JVM cannot "
                        "reserve its heap and code cache",
    ("node", "strict"): "memory = 512MiB as RLIMIT_AS (no memory cgroup): V8 cannot reserve "
                        "its address space",
}

_ISSUE12 = "issue 12 (runner semantics)"
_ISSUE13 = "issue 13 (everyday programs)"
KNOWN_BROKEN: dict[tuple[str, str], str] = {}
# strict keeps nothing writable executable (filesystem.scratch_exec = false).
INTENDED[("gcc-run", "strict")] = ("scratch_exec = false: nothing writable is executable, so "
                                   "the compiled program cannot run (exit 126)")
for _w in ("workdir-write", "git-init", "make-intree", "pip-local"):
    INTENDED[(_w, "strict")] = ('strict keeps the work directory read-only (workdir = "direct"; '
                                '--workdir-mode copy-on-write or workdir = "copy-on-write" lifts it)')

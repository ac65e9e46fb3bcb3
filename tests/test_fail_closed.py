"""Fail closed: a layer the machine cannot give ends the run as setup_error, naming it;
with `best_effort = true` the run goes on and the RunResult says what was skipped.

A missing layer is simulated honestly, in the process that forks the monitor:
the launcher's fork server is started with a patched layer (its command is
`python -I -c PATCH + forkserver.main()`), so a patched `landlock.abi_version`
(a kernel without Landlock reports 0) is what the containment code really calls,
and a seccomp filter on that process refuses new user namespaces (EPERM, as with
user namespaces disabled) to every process it starts, compiled or not. The launcher
runs in a fresh interpreter (`python -c RUNNER`), like any caller.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.isolation

PATCH = r"""
import ctypes, errno, struct, sys
from sandbox.isolation import landlock
missing = sys.argv[1].split(",")
if "landlock" in missing:
    landlock.abi_version = lambda: 0          # what a kernel without Landlock reports
if "userns" in missing:
    # What disabled user namespaces give, from the kernel itself: a seccomp filter on
    # this process and all it starts refuses unshare(2) and clone(2) with
    # CLONE_NEWUSER (EPERM) and clone3(2) (ENOSYS: glibc falls back to clone), so the
    # Python stub and the compiled one (sandbox/_native/stub_fork.c) meet the same
    # refusal.
    def op(code, k, jt=0, jf=0):
        return struct.pack("=HBBI", code, jt, jf, k)
    LD, JEQ, JSET, RET = 0x20, 0x15, 0x45, 0x06
    ALLOW, EPERM, ENOSYS = 0x7FFF0000, 0x50000 | errno.EPERM, 0x50000 | errno.ENOSYS
    prog = b"".join([
        op(LD, 4), op(JEQ, 0xC000003E, 1, 0), op(RET, ALLOW),        # not x86_64: allow
        op(LD, 0),
        op(JEQ, 435, 0, 1), op(RET, ENOSYS),                           # clone3
        op(JEQ, 272, 1, 0), op(JEQ, 56, 0, 3),                        # unshare, clone
        op(LD, 16), op(JSET, 0x10000000, 0, 1), op(RET, EPERM),       # CLONE_NEWUSER
        op(RET, ALLOW)])
    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
    libc = ctypes.CDLL(None, use_errno=True)
    fprog = Fprog(len(prog) // 8, prog)
    if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(fprog), 0, 0):
        raise OSError(ctypes.get_errno(), "cannot install the test's seccomp filter")
from sandbox import forkserver
sys.exit(forkserver.main())
"""

RUNNER = r"""
import json, sys
from sandbox.launcher import monitors
from sandbox.launcher.launcher import Launcher
missing, policy, workdir, output, code, patch = sys.argv[1], *sys.argv[2:7]
program = [sys.executable, "-I", "-c", code]
la = Launcher(capture_output=True)
la._forkserver = monitors.ForkServerClient([sys.executable, "-I", "-c", patch, missing])
r = la.spawn(program, policy=policy, workdir=workdir, output_dir=output)
la._forkserver.close()
print(json.dumps({"status": r.status, "reason": r.reason, "layers": r.layers,
                  "skipped": r.skipped_layers, "stdout": r.stdout, "stderr": r.stderr}))
"""


def has(layers: list[str], name: str) -> bool:
    """Layers are reported as "name" or "name:detail" (landlock:abi7, seccomp:default)."""
    return any(x == name or x.startswith(name + ":") for x in layers)


MARK_RAN = "import os; open(os.environ['SANDBOX_OUTPUT'] + '/ran', 'w').write('yes'); print('ran')"


def _policy(tmp_path, best_effort: bool, filesystem: str) -> str:
    path = tmp_path / f"policy-{best_effort}.toml"
    path.write_text(f'name = "fc"\nextends = ["base"]\nbest_effort = {str(best_effort).lower()}\n'
                    f'[filesystem]\nwrite = ["${{OUTPUT}}"]\n{filesystem}')
    return str(path)


def run(tmp_path, missing: str, best_effort: bool, filesystem: str = "",
        code: str = MARK_RAN, label: str = "") -> dict:
    out = tmp_path / f"out-{missing or 'none'}-{best_effort}{label}"
    work = tmp_path / "work"
    out.mkdir()
    work.mkdir(exist_ok=True)
    p = subprocess.run([sys.executable, "-I", "-c", RUNNER, missing,
                        _policy(tmp_path, best_effort, filesystem), str(work), str(out), code, PATCH],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["ran"] = (out / "ran").exists()
    return res


def test_control_nothing_missing_runs_with_every_layer(tmp_path):
    r = run(tmp_path, "", best_effort=False)
    assert r["status"] == "ok" and r["ran"], r
    assert r["skipped"] == {}
    for layer in ("namespaces", "mounts", "network", "limits", "privileges", "landlock", "seccomp"):
        assert has(r["layers"], layer), r["layers"]


def test_no_landlock_is_a_setup_error_naming_landlock(tmp_path):
    r = run(tmp_path, "landlock", best_effort=False)
    assert r["status"] == "setup_error", r
    assert r["reason"].startswith("landlock"), r["reason"]
    assert "no Landlock" in r["reason"]
    assert not r["ran"] and not r["stdout"]        # nothing of the program ran


def test_no_user_namespaces_is_a_setup_error_naming_the_namespace_layer(tmp_path):
    r = run(tmp_path, "userns", best_effort=False)
    assert r["status"] == "setup_error", r
    assert r["reason"].startswith("user_namespace"), r["reason"]
    assert "Operation not permitted" in r["reason"]
    assert not r["ran"] and not r["stdout"]


def test_no_landlock_with_best_effort_runs_and_lists_it_skipped(tmp_path):
    r = run(tmp_path, "landlock", best_effort=True)
    assert r["status"] == "ok" and r["ran"], r
    assert set(r["skipped"]) == {"landlock"}
    assert "no Landlock" in r["skipped"]["landlock"]
    assert not has(r["layers"], "landlock")
    assert has(r["layers"], "mounts") and has(r["layers"], "seccomp")


def test_no_user_namespaces_with_best_effort_runs_and_lists_what_was_skipped(tmp_path):
    r = run(tmp_path, "userns", best_effort=True)
    assert r["status"] == "ok" and r["ran"], r
    # the namespace layer itself, and the layers that need it
    assert {"user_namespace", "namespaces", "mounts", "network"} <= set(r["skipped"]), r["skipped"]
    for layer in ("namespaces", "mounts", "network"):
        assert not has(r["layers"], layer)
    # Landlock is then the filesystem guard, and it applied
    assert has(r["layers"], "landlock"), r["layers"]
    assert has(r["layers"], "seccomp")


def test_without_the_mount_view_denies_inside_granted_trees_still_hold(tmp_path):
    """No namespaces means no mount masks; Landlock alone must keep deny-inside-allow
    (it grants such a tree child by child around the denied paths)."""
    tree = tmp_path / "tree"
    (tree / "sub" / "private").mkdir(parents=True)
    for rel in ("ok.txt", "secret.txt", "sub/fine.txt", "sub/k.pem", "sub/private/x.txt"):
        (tree / rel).write_text(rel)
    fs = (f'read = ["{tree}"]\n'
          f'deny = ["{tree}/secret.txt", "{tree}/**/*.pem", "{tree}/sub/private"]\n')
    code = ("import json, os, errno\nout = {}\n"
            f"for rel in ('ok.txt', 'secret.txt', 'sub/fine.txt', 'sub/k.pem', 'sub/private/x.txt'):\n"
            f"    try:\n        out[rel] = open('{tree}/' + rel).read()\n"
            "    except OSError as e:\n        out[rel] = errno.errorcode[e.errno]\n"
            "print(json.dumps(out))")
    r = run(tmp_path, "userns", best_effort=True, filesystem=fs, code=code)
    assert r["status"] == "ok", r
    assert not has(r["layers"], "mounts") and has(r["layers"], "landlock")
    got = json.loads(r["stdout"])
    assert got == {"ok.txt": "ok.txt", "secret.txt": "EACCES", "sub/fine.txt": "sub/fine.txt",
                   "sub/k.pem": "EACCES", "sub/private/x.txt": "EACCES"}, got
    # and the root caller's /etc/shadow (base denies it inside the readable /etc)
    r = run(tmp_path, "userns", best_effort=True, label="-shadow",
            code="import errno\ntry:\n    open('/etc/shadow').read(1); print('READ')\n"
                 "except OSError as e:\n    print(errno.errorcode[e.errno])")
    assert r["stdout"].strip() == "EACCES", r


def test_both_missing_with_best_effort_runs_with_what_is_left(tmp_path):
    r = run(tmp_path, "landlock,userns", best_effort=True)
    assert r["status"] == "ok" and r["ran"], r
    assert {"user_namespace", "namespaces", "mounts", "network", "landlock"} <= set(r["skipped"])
    for layer in ("landlock", "mounts", "namespaces", "network"):
        assert not has(r["layers"], layer)
    assert has(r["layers"], "seccomp") and has(r["layers"], "privileges")
    assert has(r["layers"], "limits")


def test_both_missing_without_best_effort_fails_at_the_first_one(tmp_path):
    r = run(tmp_path, "landlock,userns", best_effort=False)
    assert r["status"] == "setup_error" and r["reason"].startswith("user_namespace"), r
    assert not r["ran"]


def test_doctor_json_says_this_machine_has_everything():
    """Every feature is present here, so `sandbox doctor --json` exits 0 (the verdict
    with a missing feature is tests/test_doctor.py::test_missing_required_feature_exits_1)."""
    p = subprocess.run([sys.executable, "-m", "sandbox", "doctor", "--json"], capture_output=True,
                       text=True, timeout=120, cwd=os.path.dirname(os.path.abspath(__file__)))
    assert p.returncode == 0, (p.stdout, p.stderr)
    facts = json.loads(p.stdout)
    assert facts["enforceable"] is True and facts["missing"] == []
    from sandbox.isolation.landlock import abi_version
    assert facts["checks"]["landlock"]["ok"] is True and abi_version() >= 1

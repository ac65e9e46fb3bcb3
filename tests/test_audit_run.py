"""The file audit end to end: real sandboxes, records read back from the store."""
from __future__ import annotations

import collections
import json
import os
import sys
import threading
import time
from dataclasses import replace

import pytest

import sandbox.audit
from sandbox.policy import load_policy
from sandbox.policy.model import AuditPolicy, SyscallPolicy

pytestmark = pytest.mark.isolation
PROBES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "probes")


def policy(files: str = "all", deny: tuple[str, ...] = (), base: str = "default", **syscalls):
    pol = load_policy(base).replace(audit=AuditPolicy(files=files))
    # the scripts count on a read-only work directory (a denied create there)
    pol = pol.replace(filesystem=replace(pol.filesystem, workdir="direct"))
    if deny:
        pol = pol.replace(filesystem=replace(pol.filesystem, deny=pol.filesystem.deny + deny))
    if syscalls:
        pol = pol.replace(syscalls=replace(pol.syscalls, **syscalls))
    return pol


@pytest.fixture
def audit_launcher(tmp_path):
    from sandbox.launcher.launcher import Launcher
    la = Launcher(capture_output=True)
    la.audit_db = str(tmp_path / "audit")
    return la


def dirs(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    tag = work / "tag"                # the interpreter itself stats its cwd (work)
    tag.mkdir(parents=True)
    (tag / "in.txt").write_text("in")
    return str(out), str(work), str(tag)


def tagged(records, *prefixes):
    return [r for r in records if r["path"].startswith(prefixes)]


@pytest.mark.parametrize("pem", [False, True], ids=["kernel-decides", "guarded-brokered"])
def test_scripted_syscalls_produce_exactly_their_records(audit_launcher, tmp_path, py, pem):
    out, work, tag = dirs(tmp_path)
    deny = (f"{out}/*.pem",) if pem else ()
    src = open(os.path.join(PROBES, "audit_script.py")).read()
    argv = [py, "-I", "-c", src, out, tag] + (["pem"] if pem else [])
    r = audit_launcher.spawn(argv, policy=policy("all", deny), workdir=work, output_dir=out)
    assert r.status == "ok", (r.reason, r.stderr)
    expected = json.loads(r.stdout)["expected"]
    recs = tagged(sandbox.audit.records(r.run_id, db=audit_launcher.audit_db), out, tag)
    got = collections.Counter((x["operation"], x["syscall"], x["path"], x["verdict"] == "allowed")
                              for x in recs)
    want = collections.Counter(tuple(e) for e in expected)
    assert got - want == collections.Counter(), "invented records"
    assert want - got == collections.Counter(), "missing records"
    assert len(expected) >= 50 and {e[1] for e in expected} >= {
        "open", "openat", "openat2", "creat", "execve", "execveat", "unlink", "unlinkat",
        "rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir", "symlink", "symlinkat",
        "link", "linkat", "truncate", "chmod", "fchmodat", "chown", "lchown", "fchownat",
        "stat", "lstat", "newfstatat", "statx", "access", "faccessat", "faccessat2"}
    # three callers: the main thread, a second thread, a grandchild process
    assert len({x["pid"] for x in recs}) == 3
    for x in recs:
        if x["verdict"] == "denied":
            if x["path"].endswith(".pem"):
                assert x["rule"] == f"filesystem.deny: {out}/*.pem" and x["enforced"] == "monitor"
            else:
                assert x["rule"] == "default: not granted"
    denied = {(d["path"], d["operation"]) for d in r.denied}
    assert (f"{tag}/nope.txt", "create") in denied and (f"{out}/a.txt", "exec") in denied
    assert r.audit["denied_count"] == len(r.denied) and r.audit["dropped"] == 0
    if pem:
        assert r.audit["brokered"] > 0 and r.audit["guarded"] == [out]
        assert not os.path.exists(f"{out}/key.pem") and not os.path.exists(f"{out}/b.pem")
    else:
        assert r.audit["brokered"] == 0


RACE = r"""
import ctypes, os, sys, threading, time
out, n = sys.argv[1], int(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
good, bad = f"{out}/aaa.txt".encode(), f"{out}/aaa.pem".encode()
open(f"{out}/aaa.txt", "w").write("GOOD")
open(f"{out}/started", "w").close()
while not os.path.exists(f"{out}/ready"):
    time.sleep(0.01)
buf = ctypes.create_string_buffer(good, 4096)
stop = False
def flip():
    while not stop:
        ctypes.memmove(buf, bad, len(bad)); ctypes.memmove(buf, good, len(good))
t = threading.Thread(target=flip); t.start()
seen = {"GOOD": 0, "SECRET": 0, "fail": 0}
for _ in range(n):
    fd = libc.syscall(257, -100, buf, 0, 0)
    if fd < 0:
        seen["fail"] += 1; continue
    seen[os.read(fd, 16).decode()] += 1
    os.close(fd)
stop = True; t.join()
print(seen)
"""


def _race(launcher, tmp_path, py, pol, n):
    out = tmp_path / "shared"   # a writable host tree (${OUTPUT} is a private tmpfs)
    out.mkdir()
    pol = pol.replace(filesystem=replace(pol.filesystem,
                                         write=pol.filesystem.write + (str(out),)))

    def plant():   # the denied file appears after the view was built: no mask can hide it
        while not (out / "started").exists():
            time.sleep(0.01)
        (out / "aaa.pem").write_text("SECRET")
        (out / "ready").touch()
    th = threading.Thread(target=plant)
    th.start()
    r = launcher.spawn([py, "-I", "-c", RACE, str(out), str(n)], policy=pol,
                       output_dir=str(tmp_path / "out"), timeout=120)
    th.join()
    assert r.status == "ok", (r.reason, r.stderr)
    return r, eval(r.stdout)


@pytest.mark.slow
def test_path_swapping_thread_never_gets_the_denied_file(audit_launcher, tmp_path, py):
    out = tmp_path / "shared"
    r, seen = _race(audit_launcher, tmp_path, py, policy("denied", (f"{out}/*.pem",)), 4000)
    assert seen["SECRET"] == 0, seen
    assert seen["GOOD"] > 0 and seen["fail"] > 0, seen   # both paths really were tried
    pem = [d for d in r.denied if d["path"] == f"{out}/aaa.pem"]
    assert pem and all(d["rule"] == f"filesystem.deny: {out}/*.pem" for d in pem)


@pytest.mark.slow
def test_race_control_without_the_monitor_the_layers_alone_let_it_through(
        audit_launcher, tmp_path, py):
    # The same deny rule, no audit: only the mount view and Landlock, which could
    # not know a file that appeared later. This is what the broker closes.
    out = tmp_path / "out"
    # Unaudited opens take microseconds: enough iterations to span many of the
    # interpreter's 5 ms thread switches, or the flipping thread never runs.
    out = tmp_path / "shared"
    _, seen = _race(audit_launcher, tmp_path, py, policy("none", (f"{out}/*.pem",)), 40000)
    assert seen["SECRET"] > 0, seen


def test_io_uring_is_denied_under_an_audited_run_even_if_the_policy_allows_it(
        audit_launcher, py):
    code = ("import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
            "p = ctypes.create_string_buffer(120); r = libc.syscall(425, 4, p); "
            "print(r, ctypes.get_errno())")
    allow = ("io_uring_setup", "io_uring_enter", "io_uring_register")
    control = audit_launcher.spawn([py, "-I", "-c", code], policy=policy("none", allow=allow))
    assert control.status == "ok" and int(control.stdout.split()[0]) >= 0, control.stdout
    r = audit_launcher.spawn([py, "-I", "-c", code], policy=policy("all", allow=allow))
    assert r.status == "ok" and r.stdout.split() == ["-1", "1"]       # EPERM
    k = audit_launcher.spawn([py, "-I", "-c", code],
                             policy=policy("denied", allow=allow, on_violation="kill"))
    assert k.status == "violation" and k.violation["syscall"] == "io_uring_setup"


def test_no_descriptor_of_the_child_is_a_seccomp_listener(audit_launcher, py):
    code = ("import os\nout = []\nfor f in os.listdir('/proc/self/fd'):\n"
            "    try: out.append(os.readlink(f'/proc/self/fd/{f}'))\n"
            "    except OSError: pass\nprint(out)")
    r = audit_launcher.spawn([py, "-I", "-c", code], policy=policy("all"))
    assert r.status == "ok", r.stderr
    links = eval(r.stdout)
    assert len(links) >= 4 and not any("seccomp" in link for link in links), links
    assert r.audit["records"] > 0


def test_closing_the_ipc_descriptor_does_not_stop_the_audit(audit_launcher, tmp_path, py):
    out = tmp_path / "out"
    code = ("import os, sys; os.close(int(os.environ['SANDBOX_IPC_FD'])); "
            "open(sys.argv[1] + '/after-close', 'w').write('x')")
    r = audit_launcher.spawn([py, "-I", "-c", code, str(out)], policy=policy("all"),
                             output_dir=str(out))
    assert r.status == "ok", r.stderr
    recs = tagged(sandbox.audit.records(r.run_id, db=audit_launcher.audit_db), str(out))
    assert [(x["operation"], x["path"]) for x in recs] == [("create", f"{out}/after-close")]


def test_a_fake_audit_message_over_ipc_makes_no_record(audit_launcher, tmp_path, py):
    out = tmp_path / "out"
    code = ("import os, socket, sys; from sandbox.ipc.frames import encode; "
            "s = socket.socket(fileno=int(os.environ['SANDBOX_IPC_FD'])); "
            "rec = {'path': sys.argv[1] + '/fake', 'operation': 'read', 'verdict': 'allowed'}; "
            "[s.sendall(encode(t, rec)) for t in ('audit', 'record', 'audit_record')]")
    r = audit_launcher.spawn([py, "-I", "-c", code, str(out)], policy=policy("all"),
                             output_dir=str(out))
    recs = sandbox.audit.records(r.run_id, db=audit_launcher.audit_db)
    assert recs and not [x for x in recs if "fake" in x["path"]]
    assert not any("fake" in p for p, _ in r.audit["top_paths"])


def test_denied_mode_records_only_denials_and_none_mode_makes_no_run(audit_launcher, py):
    code = "open('/etc/hostname').read()\ntry: open('/etc/shadow')\nexcept OSError: pass"
    r = audit_launcher.spawn([py, "-I", "-c", code], policy=policy("denied"))
    recs = sandbox.audit.records(r.run_id, db=audit_launcher.audit_db)
    assert [(x["path"], x["verdict"], x["rule"]) for x in recs] == [
        ("/etc/shadow", "denied", "filesystem.deny: /etc/shadow*")]
    assert r.audit["checked"] > r.audit["records"] == 1
    n = audit_launcher.spawn([py, "-I", "-c", code], policy=policy("none"))
    assert n.audit is None and n.denied == []
    from sandbox.errors import InputError
    with pytest.raises(InputError):
        sandbox.audit.records(n.run_id, db=audit_launcher.audit_db)


def test_relative_paths_cwd_and_links_resolve_inside_the_sandbox_root(
        audit_launcher, tmp_path, py):
    out = tmp_path / "out"
    # an absolute link made in the output dir points into the sandbox's own /tmp:
    # resolved against the monitor's root it would name a host path instead
    code = ("import os, sys; os.chdir('/tmp'); open('inside', 'w').write('x'); "
            "os.chdir(sys.argv[1]); os.symlink('/tmp/inside', 'abs-link'); "
            "open('abs-link').read(); os.stat('../out/abs-link')")
    r = audit_launcher.spawn([py, "-I", "-c", code, str(out)], policy=policy("all"),
                             output_dir=str(out))
    assert r.status == "ok", r.stderr
    recs = [(x["operation"], x["syscall"], x["path"])
            for x in sandbox.audit.records(r.run_id, db=audit_launcher.audit_db)
            if "inside" in x["path"] or "abs-link" in x["path"]]
    assert ("create", "openat", "/tmp/inside") in recs
    assert ("read", "openat", "/tmp/inside") in recs
    assert ("metadata", "newfstatat", "/tmp/inside") in recs
    assert not os.path.exists("/tmp/inside") or True   # the host's /tmp is not the sandbox's


def test_export_jsonl_and_summary(audit_launcher, tmp_path, py):
    r = audit_launcher.spawn([py, "-I", "-c", "open('/etc/hostname').read()"],
                             policy=policy("all"))
    path = tmp_path / "a.jsonl"
    n = sandbox.audit.export_jsonl(r.run_id, str(path), db=audit_launcher.audit_db)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert n == len(lines) == r.audit["stored"] > 0
    # repeats are folded into one row each: the counts add up to every recorded event
    assert sum(x["count"] for x in lines) == r.audit["records"] == r.audit["stored_events"]
    assert r.audit["truncated"] is False and r.audit["not_stored"] == r.audit["dropped"] == 0
    assert [x["seq"] for x in lines] == sorted(x["seq"] for x in lines)
    assert {"run_id", "seq", "time", "first", "last", "count", "pid", "operation", "syscall",
            "path", "flags", "verdict", "rule", "enforced", "result"} <= set(lines[0])
    assert any(x["path"] == "/etc/hostname" and x["operation"] == "read" for x in lines)
    s = sandbox.audit.summary(r.run_id[:10], db=audit_launcher.audit_db)
    assert s["stored"] == n and s["records"] == r.audit["records"]
    assert s["by_verdict"]["allowed"] + s["by_verdict"]["denied"] == s["records"]
    assert s["by_operation"] == r.audit["by_operation"]


def test_o_creat_on_what_exists_is_recorded_as_the_open_it_is(audit_launcher, tmp_path):
    """`2>/dev/null` creates nothing: it was recorded as a denied create of /dev/null
    (and hinted as a write grant on /dev). Judged from the store: the open it is, while
    a new file in the read-only work directory is still a refused create."""
    work = tmp_path / "w"
    work.mkdir()
    (work / "old.txt").write_text("x")
    script = "echo a >/dev/null 2>/dev/null; echo b >> old.txt; echo c >> new.txt; true"
    r = audit_launcher.spawn(["sh", "-c", script], policy=policy("all"), workdir=str(work))
    assert r.status == "ok", (r.reason, r.stderr)
    recs = {(x["operation"], x["path"], x["verdict"])
            for x in sandbox.audit.records(r.run_id, db=audit_launcher.audit_db)
            if x["syscall"] in ("open", "openat", "openat2")}
    assert ("write", "/dev/null", "allowed") in recs, recs
    assert not any(p == "/dev/null" and op == "create" for op, p, _ in recs), recs
    assert ("write", f"{work}/old.txt", "denied") in recs, recs
    assert ("create", f"{work}/new.txt", "denied") in recs, recs

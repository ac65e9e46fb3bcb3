"""Fuzzing the notification path (issue 10, finding 5): random bytes as paths and
symlink targets, vfork+exec storms with a parent rewriting its memory, and
thousands of threads.

Judged from the host, for every run: the monitor survives (the status and exit
code are the program's own), the store holds the exact bytes of every name
used, no record names what the program did not open, and every recorded event
is counted once: records == stored_events + not_stored + dropped, with nothing
dropped.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest
from hypothesis import Phase, given, settings, strategies as st

import sandbox.audit
from sandbox.policy import load_policy
from sandbox.policy.model import AuditPolicy

pytestmark = pytest.mark.isolation
PROBES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "probes")

FUZZ = r"""
import json, os, sys
spec = json.load(open(sys.argv[1]))
for name, target in zip(map(bytes.fromhex, spec["names"]), map(bytes.fromhex, spec["targets"])):
    p = b"/etc/" + name
    for call in (lambda: os.close(os.open(p, os.O_RDONLY)),
                 lambda: os.stat(p),
                 lambda: os.mkdir(b"/tmp/" + name),
                 lambda: os.symlink(target, b"/tmp/l-" + name),
                 lambda: os.unlink(b"/tmp/l-" + name),
                 lambda: os.execv(p, [b"x"])):
        try:
            call()
        except (OSError, ValueError):
            pass
sys.exit(spec["exit"])
"""

NAMES = st.binary(min_size=1, max_size=120).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b".."))


def launcher(tmp_path):
    from sandbox.launcher.launcher import Launcher
    la = Launcher(capture_output=True)
    la.audit_db = str(tmp_path / "audit")
    return la


def audited(files: str = "all", **limits):
    pol = load_policy("default").replace(audit=AuditPolicy(files=files))
    if limits:
        pol = pol.replace(limits=replace(pol.limits, **limits))
    return pol


def accounted(a: dict) -> None:
    assert a["dropped"] == 0 and a.get("db_error") is None, a
    assert a["records"] == a["stored_events"] + a["not_stored"] + a["dropped"], a
    assert a["vanished"] == 0 and a["errors"] == 0, a


@settings(derandomize=True, max_examples=6, deadline=None,
          phases=(Phase.explicit, Phase.generate))   # each example is a sandbox: no shrinking
@given(st.lists(st.tuples(NAMES, st.binary(min_size=1, max_size=200).filter(
    lambda b: b"\0" not in b)), min_size=1, max_size=40, unique_by=lambda t: t[0]),
       st.integers(min_value=0, max_value=255))
def test_random_bytes_as_paths(tmp_path_factory, pairs, code):
    tmp_path = tmp_path_factory.mktemp("fuzz")
    work = tmp_path / "work"
    work.mkdir()
    spec = {"names": [n.hex() for n, _ in pairs], "targets": [t.hex() for _, t in pairs],
            "exit": code}
    (work / "spec.json").write_text(json.dumps(spec))
    la = launcher(tmp_path)
    r = la.spawn([sys.executable, "-I", "-S", "-c", FUZZ,
                  str(work / "spec.json")], policy=audited(), workdir=str(work))
    want = "ok" if code == 0 else "error"
    assert r.status == want and r.exit_code == code, (r.status, r.reason, r.stderr)
    accounted(r.audit)
    recs = sandbox.audit.records(r.run_id, db=la.audit_db)
    got = {(x["operation"], x["syscall"], os.fsencode(x["path"])) for x in recs}
    targets = {os.fsencode(x["flags"]) for x in recs if x["syscall"] == "symlink"}
    for name, target in pairs:
        assert ("read", "openat", b"/etc/" + name) in got, name
        assert ("metadata", "newfstatat", b"/etc/" + name) in got or \
            ("metadata", "stat", b"/etc/" + name) in got, name
        assert ("create", "mkdir", b"/tmp/" + name) in got, name
        assert ("exec", "execve", b"/etc/" + name) in got, name
        assert b"target=" + target in targets, target


def build(src: str, dest: str) -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("a C compiler is needed to build the attack program (cc/gcc)")
    subprocess.run([cc, "-O1", "-static", "-no-pie", "-pthread", "-o", dest,
                    os.path.join(PROBES, src)], check=True)
    return dest


def test_vfork_exec_storm_with_threads_rewriting_the_parents_memory(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    prog = build("vfork_storm.c", str(work / "storm"))
    la = launcher(tmp_path)
    pol = audited()
    pol = pol.replace(filesystem=replace(pol.filesystem, exec=pol.filesystem.exec + (str(work),)))
    threads, rounds = 4, 60
    r = la.spawn([prog, "parent", str(threads), str(rounds), "/usr/share/common-licenses/GPL-3",
                  "/etc/passwd"], policy=pol, workdir=str(work))
    assert r.status == "error" and r.exit_code == 9, (r.status, r.reason, r.stderr)
    assert r.stdout.split() == [str(threads * rounds), "0"], r.stdout
    accounted(r.audit)
    recs = sandbox.audit.records(r.run_id, db=la.audit_db)
    assert not [x for x in recs if "common-licenses" in x["path"] or "decoy" in x["path"]]
    opened = sum(x["count"] for x in recs if x["path"] == "/etc/passwd"
                 and x["syscall"] == "openat")
    assert opened == threads * rounds


def test_thousands_of_threads(tmp_path, py):
    code = r"""
import os, sys, threading
def work(i):
    try: os.open('/etc/shadow', os.O_RDONLY)
    except OSError: pass
    try: os.stat(f'/etc/thread-{i}')
    except OSError: pass
n = 0
for wave in range(10):
    ts = [threading.Thread(target=work, args=(wave * 200 + k,)) for k in range(200)]
    for t in ts: t.start()
    for t in ts: t.join()
    n += len(ts)
print(n)
sys.exit(5)
"""
    la = launcher(tmp_path)
    r = la.spawn([py, "-I", "-S", "-c", code], policy=audited(processes=1024))
    assert r.status == "error" and r.exit_code == 5, (r.status, r.reason, r.stderr)
    assert r.stdout.strip() == "2000"
    accounted(r.audit)
    recs = sandbox.audit.records(r.run_id, db=la.audit_db)
    shadow = [x for x in recs if x["path"] == "/etc/shadow"]
    assert len(shadow) == 1 and shadow[0]["count"] == 2000, shadow   # folded across threads
    stats = {x["path"] for x in recs if x["path"].startswith("/etc/thread-")}
    assert stats == {f"/etc/thread-{i}" for i in range(2000)}

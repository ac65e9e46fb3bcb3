"""The audit reads the caller's memory of the *current* exec of the calling task.

Attack (issue 10, finding 5): after vfork+exec a monitor that kept the
/proc/<tid>/mem descriptor it opened during the vfork (when the child shared
the parent's memory) reads the parent's memory for the exec'd child's calls, so
the parent chooses the recorded path. Judged from the host: the store must name
what the child really opened, and never the decoy.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace

import pytest

import sandbox.audit
from sandbox.policy import load_policy
from sandbox.policy.model import AuditPolicy

pytestmark = pytest.mark.isolation
PROBES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "probes")
DECOY = "/usr/share/common-licenses/GPL-3"
REAL = "/etc/passwd"


def build(src: str, dest: str) -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("a C compiler is needed to build the attack program (cc/gcc)")
    subprocess.run([cc, "-O1", "-static", "-no-pie", "-o", dest, os.path.join(PROBES, src)], check=True)
    return dest


def exec_policy(work: str):
    pol = load_policy("default").replace(audit=AuditPolicy(files="all"))
    return pol.replace(filesystem=replace(pol.filesystem, exec=pol.filesystem.exec + (work,)))


def test_vfork_exec_parent_cannot_choose_the_recorded_path(tmp_path):
    from sandbox.launcher.launcher import Launcher
    work = tmp_path / "work"
    work.mkdir()
    prog = build("vfork_exec.c", str(work / "vfx"))
    la = Launcher(capture_output=True)
    la.audit_db = str(tmp_path / "audit")
    rounds = 200
    r = la.spawn([prog, "parent", str(rounds), DECOY, REAL], policy=exec_policy(str(work)),
                 workdir=str(work), output_dir=str(tmp_path / "out"))
    assert r.status == "ok", (r.reason, r.stderr)
    assert r.stdout.split() == [str(rounds), "0"], r.stdout      # every child read REAL
    recs = sandbox.audit.records(r.run_id, db=la.audit_db)
    lies = [x for x in recs if x["path"] == DECOY]
    assert lies == [], f"{len(lies)} records name the parent's decoy, e.g. {lies[:1]}"
    opened = sum(x.get("count", 1) for x in recs
                 if x["path"] == REAL and x["syscall"] in ("open", "openat"))
    assert opened == rounds

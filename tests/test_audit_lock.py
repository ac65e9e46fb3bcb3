"""One sandbox cannot lock, slow or blind another run's audit (issue 11, finding 3).

Attack: a sandbox run from a HOME that contains the audit store (its policy
grants ${WORKDIR} = that HOME) opens every file it can find there and holds
read locks on them (the SQLite -shm read lock of the report, plus a read
transaction on every database). With one shared SQLite file, every other
monitor of the uid got "database is locked": records were dropped and an
unrelated run ended as an error.

Judged from the host: while the hostile run holds whatever it could lock, a
second, well-behaved run completes `ok` with a complete audit (every recorded
event stored, nothing dropped, no store error), and its records read back.
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import replace

import pytest

import sandbox.audit
from sandbox.policy import load_policy
from sandbox.policy.model import AuditPolicy, Limits

pytestmark = pytest.mark.isolation

HOSTILE = r"""
import fcntl, json, os, sqlite3, sys, time
home, out = sys.argv[1], sys.argv[2]
keep, locked, seen = [], [], []
for dirpath, dirs, files in os.walk(home):
    seen += [os.path.join(dirpath, name) for name in files]
for p in seen:     # a read transaction on every database it can open ...
    try:
        c = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=0.1)
        c.execute("BEGIN")
        c.execute("SELECT count(*) FROM sqlite_master").fetchall()
        keep.append(c)
    except Exception:
        pass
for p in seen:     # ... then a read lock on every whole file, the -shm included (never
    try:           # closed: closing any descriptor of a file drops our POSIX locks on it)
        fd = os.open(p, os.O_RDONLY)
        keep.append(fd)
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        locked.append(p)
    except OSError:
        pass
with open(os.path.join(out, "ready.tmp"), "w") as f:
    json.dump({"seen": seen, "locked": locked}, f)
os.rename(os.path.join(out, "ready.tmp"), os.path.join(out, "ready"))
while not os.path.exists(os.path.join(home, "release")):
    time.sleep(0.05)
"""


def test_a_hostile_sandbox_cannot_lock_another_runs_audit(tmp_path, py):
    from sandbox.launcher.launcher import Launcher
    home = tmp_path / "home"
    store = home / ".local" / "state" / "sandbox" / "audit"
    la = Launcher(capture_output=True)
    la.audit_db = str(store)
    # workdir "direct": the hostile run waits for a file the host makes in its work
    # directory, which a copy-on-write snapshot need not show
    base = load_policy("default")
    audited = base.replace(audit=AuditPolicy(files="all"),
                           filesystem=replace(base.filesystem, workdir="direct"))
    # runs before: the store has files (and a run's file) to lock
    first = la.spawn([py, "-I", "-c", "open('/etc/hostname').read()"], policy=audited,
                     workdir=str(home))
    assert first.status == "ok" and first.audit["dropped"] == 0, first.audit
    out = tmp_path / "hostile-signal"   # a host tree it can write: its ${OUTPUT} is a
    out.mkdir()                         # private tmpfs until it ends (test_outputs.py)
    hostile_pol = audited.replace(limits=replace(audited.limits, wall=120.0),
                                  filesystem=replace(audited.filesystem,
                                                     write=(*audited.filesystem.write, str(out))))
    results = {}

    def hostile():
        results["hostile"] = la.spawn([py, "-I", "-c", HOSTILE, str(home), str(out)],
                                      policy=hostile_pol, workdir=str(home),
                                      output_dir=str(tmp_path / "hostile-out"))
    t = threading.Thread(target=hostile)
    t.start()
    try:
        deadline = time.monotonic() + 60
        while not (out / "ready").exists() and t.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (out / "ready").exists(), results.get("hostile")
        report = json.loads((out / "ready").read_text())
        # the well-behaved run, while the hostile one holds its locks
        code = ("import os\n"
                "for i in range(300): open('/etc/hostname').read()\n"
                "try: open('/etc/shadow')\nexcept OSError: pass\n")
        good = la.spawn([py, "-I", "-c", code], policy=audited, workdir=str(tmp_path))
    finally:
        (home / "release").write_text("")
        t.join(150)
    assert good.status == "ok", (good.status, good.reason, good.stderr)
    a = good.audit
    assert a["dropped"] == 0 and a.get("db_error") is None, a
    assert a["records"] == a["stored_events"] and a["not_stored"] == 0, a
    recs = sandbox.audit.records(good.run_id, db=la.audit_db)
    assert sum(x["count"] for x in recs) == a["records"]
    assert any(x["path"] == "/etc/shadow" and x["verdict"] == "denied" for x in recs)
    # the store was never in the hostile sandbox's view at all
    assert not [p for p in report["seen"] if p.startswith(str(store))], report
    assert results["hostile"].status == "ok", results["hostile"].reason

"""The audit store can be neither blinded nor bloated (issue 10, finding 5).

- A path is any bytes: stored exactly, whatever they are; the writer survives
  any record and counts what it could not store.
- Repeats are one row (count, first, last); a run stores at most its budget
  and says so (`truncated`, `not_stored`); the store directory has a size cap.
- Every recorded event is accounted for once:
  records == stored_events + not_stored + dropped.
Judged from the host: the run's result (status, exit code) and the store's rows.
"""
from __future__ import annotations

import collections
import fcntl
import os
import sqlite3
import time
from dataclasses import replace

import pytest
from hypothesis import given, settings, strategies as st

import sandbox.audit
from sandbox.audit import retention, store
from sandbox.audit.writer import Writer
from sandbox.policy import load_policy
from sandbox.policy.model import AuditPolicy


def policy(files: str = "all", records: int | None = None):
    pol = load_policy("default")
    audit = AuditPolicy(files=files, **({} if records is None else {"records": records}))
    return pol.replace(audit=audit)


def launcher(tmp_path):
    from sandbox.launcher.launcher import Launcher
    la = Launcher(capture_output=True)
    la.audit_db = str(tmp_path / "audit")
    return la


def accounted(a: dict) -> None:
    assert a["records"] == a["stored_events"] + a["not_stored"] + a["dropped"], a


# -- the writer, without a sandbox -------------------------------------------------------------
def writer(tmp_path, budget: int = 50_000) -> Writer:
    d = str(tmp_path / "audit")
    return Writer(lambda: store.create_run(d, "r1", policy="p", files="all", mode="exec",
                                           argv=None), budget=budget)


def event(seq, path, *, op="read", allowed=True, rule="filesystem.read: /", flags=None):
    return (seq, time.time(), 100 + seq % 3, op, "openat", path, flags, allowed, rule,
            "kernel", None)


def rows(tmp_path, run_id="r1"):
    st_ = store.connect(str(tmp_path / "audit"))
    try:
        return list(store.records(st_, run_id))
    finally:
        st_.close()


def test_writer_survives_any_record_and_counts_what_it_could_not_store(tmp_path):
    w = writer(tmp_path)
    weird = ["/etc/\udcff\udcfe", "/lone/\ud800", "/ok", "/nul\x00inside", "/\x1b]0;x\x07"]
    seq = 0
    for p in weird:
        seq += 1
        w.put(event(seq, p))
    seq += 1
    w.put(event(seq, "/x", rule=object()))          # a value SQLite cannot take
    seq += 1
    w.put(event(seq, "/after"))                     # ... and the writer is still there
    w.close()
    assert w.events == seq and w.dropped == 1 and w.error
    assert w.stored_events + w.not_stored + w.dropped == seq
    got = {os.fsencode(r["path"]) if "\ud800" not in r["path"] else r["path"].encode(
        "utf-8", "surrogatepass") for r in rows(tmp_path)}
    assert b"/etc/\xff\xfe" in got and b"/after" in got and b"/nul\x00inside" in got
    assert "/lone/\ud800".encode("utf-8", "surrogatepass") in got
    w.file.close()


KEYS = st.tuples(st.sampled_from(["/a", "/b", "/c\udcff", "/d", "/e", "/f" * 40]),
                 st.sampled_from(["read", "write"]), st.booleans())


@settings(derandomize=True, max_examples=60, deadline=None)
@given(st.lists(KEYS, max_size=300), st.integers(min_value=1, max_value=8))
def test_folding_and_budget_account_for_every_event(tmp_path_factory, events, budget):
    tmp_path = tmp_path_factory.mktemp("w")
    w = writer(tmp_path, budget=budget)
    for i, (path, op, ok) in enumerate(events, 1):
        w.put(event(i, path, op=op, allowed=ok))
    w.close()
    w.file.close()
    keys = collections.Counter(events)
    order = list(dict.fromkeys(events))              # distinct records, first come first
    kept, text = [], 0
    for k in order:
        size = len(os.fsencode(k[0]))
        if len(kept) < budget and text + size <= budget * store.TEXT_PER_RECORD:
            kept.append(k)
            text += size
    stored = {(r["path"], r["operation"], r["verdict"] == "allowed"): r for r in rows(tmp_path)}
    assert set(stored) == set(kept)
    for k in kept:
        assert stored[k]["count"] == keys[k]
        assert stored[k]["first"] <= stored[k]["last"]
    assert w.stored == len(kept) <= budget
    assert w.not_stored == sum(keys[k] for k in order if k not in kept)
    assert w.stored_events + w.not_stored + w.dropped == len(events) == w.events
    assert w.truncated == (len(kept) < len(order))


def test_store_cap_deletes_the_oldest_finished_runs_never_a_live_one(tmp_path):
    d = str(tmp_path / "audit")
    files = []
    for i in range(5):
        f = store.create_run(d, f"run{i}", policy="p", files="all", mode="exec", argv=None)
        f.conn.execute("INSERT INTO records VALUES (1, 0, 0, 1, 1, 'read', 'openat', ?, NULL, "
                       "1, 'r', 'kernel', NULL)", (b"x" * 200_000,))
        files.append(f)
        os.utime(f.path, (1000 + i, 1000 + i))
    for f in files[1:]:
        f.close()                                    # run0 is still being written
    for i in range(1, 5):
        os.utime(files[i].path, (1000 + i, 1000 + i))
    size = sum(os.path.getsize(os.path.join(d, n)) for n in os.listdir(d))
    deleted = retention.enforce_cap(d, size // 2)
    left = sorted(n for n in os.listdir(d) if n.endswith(".sqlite"))
    assert "run0.sqlite" in left                     # live: never deleted
    assert deleted >= 1 and "run1.sqlite" not in left and "run4.sqlite" in left
    assert sum(os.path.getsize(os.path.join(d, n)) for n in os.listdir(d)) <= size // 2 + \
        os.path.getsize(files[0].path) + 65536
    files[0].close()


# -- real sandboxes ----------------------------------------------------------------------------


@pytest.mark.isolation
def test_non_utf8_paths_are_stored_exactly_and_the_exit_status_survives(tmp_path, py):
    la = launcher(tmp_path)
    names = [b"/etc/\xff\xfe", b"/etc/caf\xe9", b"/tmp/\x80\x81", b"/etc/ok\xc3\xa9",
             b"/etc/\xed\xa0\x80"]
    code = ("import os, sys\n"
            "for n in sys.argv[1:]:\n"
            "    for flags in (os.O_RDONLY, os.O_WRONLY | os.O_CREAT):\n"
            "        try: os.close(os.open(bytes.fromhex(n), flags))\n"
            "        except OSError: pass\n"
            "sys.exit(7)\n")
    r = la.spawn([py, "-I", "-c", code, *[n.hex() for n in names]], policy=policy("all"))
    assert r.status == "error" and r.exit_code == 7, (r.status, r.reason, r.stderr)
    a = r.audit
    assert a["dropped"] == 0 and a.get("db_error") is None, a
    accounted(a)
    got = {os.fsencode(x["path"]) for x in sandbox.audit.records(r.run_id, db=la.audit_db)}
    assert set(names) <= got
    hexed = {bytes.fromhex(d["path_hex"]) for d in r.denied if d.get("path_hex")}
    assert {b"/etc/\xff\xfe", b"/etc/caf\xe9", b"/etc/\xed\xa0\x80"} <= hexed


@pytest.mark.isolation
def test_repeated_denials_are_one_row_with_a_count(tmp_path, py):
    la = launcher(tmp_path)
    n = 20_000
    code = ("import os, sys\n"
            f"for _ in range({n}):\n"
            "    try: os.open('/etc/shadow', os.O_RDONLY)\n"
            "    except OSError: pass\n")
    r = la.spawn([py, "-I", "-S", "-c", code], policy=policy("denied"))
    assert r.status == "ok", (r.reason, r.stderr)
    recs = [x for x in sandbox.audit.records(r.run_id, db=la.audit_db)
            if x["path"] == "/etc/shadow"]
    assert len(recs) == 1 and recs[0]["count"] == n, recs
    assert recs[0]["first"] <= recs[0]["last"]
    assert r.audit["denied_count"] >= n and r.audit["stored"] < 10
    accounted(r.audit)
    size = sum(os.path.getsize(os.path.join(la.audit_db, f)) for f in os.listdir(la.audit_db))
    assert size < 256 * 1024, size              # was one row per denial: megabytes


@pytest.mark.isolation
def test_record_budget_truncates_and_the_run_goes_on(tmp_path, py):
    la = launcher(tmp_path)
    code = ("import os, sys\n"
            "for i in range(400):\n"
            "    try: os.open(f'/etc/nope-{i}', os.O_RDONLY)\n"
            "    except OSError: pass\n"
            "sys.exit(3)\n")
    r = la.spawn([py, "-I", "-S", "-c", code], policy=policy("all", records=40))
    assert r.status == "error" and r.exit_code == 3, (r.status, r.reason)
    a = r.audit
    assert a["truncated"] is True and a["not_stored"] > 0 and a["budget"] == 40
    assert a["stored"] == 40 and a["dropped"] == 0
    accounted(a)
    assert len(sandbox.audit.records(r.run_id, db=la.audit_db)) == 40
    s = sandbox.audit.summary(r.run_id, db=la.audit_db)
    assert s["truncated"] is True and s["not_stored"] == a["not_stored"]


@pytest.mark.isolation
def test_a_store_under_a_home_that_does_not_exist_is_never_created(tmp_path, py, monkeypatch):
    """HOME=/nonexistent (a system user's): the launcher must not create that HOME
    (a stray /nonexistent made every later '/nonexistent/...' test path writable);
    the run goes on, and its records are counted as lost, with the reason."""
    from sandbox.launcher.launcher import Launcher
    top = f"/sbx-no-home-{os.getpid()}-{time.monotonic_ns()}"
    assert not os.path.lexists(top)
    la = Launcher(capture_output=True)
    la.audit_db = f"{top}/.local/state/sandbox/audit"
    try:
        r = la.spawn([py, "-I", "-S", "-c", "open('/etc/hostname').read()"],
                     policy=policy("all"))
        assert not os.path.lexists(top)
        assert r.status == "ok", (r.reason, r.stderr)
        a = r.audit
        assert a["records"] > 0 and a["dropped"] == a["records"] and a["stored"] == 0, a
        assert "no audit store" in (a.get("db_error") or ""), a
        accounted(a)
    finally:
        if os.path.lexists(top):
            import shutil
            shutil.rmtree(top)

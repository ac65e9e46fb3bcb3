"""A quiet run holds no SQLite state in the monitor host (issue 14: <= 64 KiB per sandbox).

One monitor process watches every run of a launcher; an open connection to a
run's store costs its page cache, its -wal and its mmap'ed -shm (~100 KiB of
PSS) even while the run writes nothing. The writer closes a run's connection
once its queue stayed empty for a flush period and reopens it for the next
batch and for the end. What must not change: every event is stored (full
recall, counts folded), each run's records go to its own file only, and a
live but idle run's file is never taken by the store's size cap.
Judged from the host: this process's (or the monitor host's) fds and maps, and
the store's rows.
"""
from __future__ import annotations

import os
import time

import pytest
from hypothesis import given, settings, strategies as st

import sandbox.audit
from sandbox.audit import retention, store
from sandbox.audit.writer import FLUSH_SECONDS, Writer, WriterPool


def _holds(pid: int | str, path: str) -> tuple[int, bool]:
    """(fds of `pid` open on `path` or its -wal/-shm, whether any of them is mapped)."""
    names = {path, path + "-wal", path + "-shm"}
    fds = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in names:
                fds += 1
        except OSError:
            pass
    with open(f"/proc/{pid}/maps") as f:
        mapped = any(line.split()[-1] in names for line in f if len(line.split()) >= 6)
    return fds, mapped


def _sleeping(marker: str) -> bool:
    """A process whose command line holds `marker` is asleep in nanosleep."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() not in f.read():
                    continue
            with open(f"/proc/{pid}/wchan") as f:
                if "nanosleep" in f.read():
                    return True
        except OSError:
            continue
    return False


def _until(pred, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(FLUSH_SECONDS / 2)
    return pred()


def _event(seq, path, allowed=True):
    return (seq, time.time(), 100, "read", "openat", path, None, allowed, "r", "kernel", None)


def _writer(d: str, run_id: str, pool: WriterPool) -> Writer:
    return Writer(lambda: store.create_run(d, run_id, policy="p", files="all",
                                           mode="exec", argv=None), pool=pool)


def test_a_quiet_run_holds_only_its_lock_and_a_capped_store_keeps_it(tmp_path):
    d = str(tmp_path / "audit")
    w = _writer(d, "quiet", WriterPool())
    f = w.wait_open()
    assert f is not None
    # Quiet: the runs row is there, the connection is closed, only the lock fd stays.
    assert _until(lambda: _holds("self", f.path) == (1, False)), _holds("self", f.path)
    assert not os.path.exists(f.path + "-wal") and not os.path.exists(f.path + "-shm")
    reader = store.connect(d)
    assert store.run_info(reader, "quiet")["ended"] is None
    reader.close()
    # ... and live: the size cap never deletes it.
    assert retention.enforce_cap(d, 0) == 0 and os.path.exists(f.path)
    for i in range(1, 6):
        w.put(_event(i, f"/burst/{i % 3}"))
    assert _until(lambda: w.events == 5 and _holds("self", f.path) == (1, False))
    w.put(_event(6, "/burst/0"))
    w.close()
    f.close()
    assert _holds("self", f.path) == (0, False)
    got = {r["path"]: r["count"] for r in sandbox.audit.records("quiet", db=d)}
    assert got == {"/burst/0": 2, "/burst/1": 2, "/burst/2": 2}


def test_an_ending_run_has_its_connection_opened_ahead_of_its_closing_row(tmp_path):
    """Once the run's last process is gone (`Writer.ending`), the shared thread reopens
    an idle run's connection and keeps it: the closing row finds it open instead of
    opening it on the report's path. Nothing stored changes."""
    d = str(tmp_path / "audit")
    w = _writer(d, "ends", WriterPool())
    f = w.wait_open()
    w.put(_event(1, "/a"))
    assert _until(lambda: w.events == 1 and not f.is_open)   # stored, then idle
    w.ending()
    assert _until(lambda: f.is_open)
    time.sleep(FLUSH_SECONDS * 2)
    assert f.is_open                       # kept open: the end comes next
    w.close()
    f.close()
    assert {r["path"]: r["count"] for r in sandbox.audit.records("ends", db=d)} == {"/a": 1}


@settings(derandomize=True, max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 5), st.booleans()),
                max_size=40))
def test_bursts_with_idle_gaps_lose_nothing_and_stay_in_their_own_run(tmp_path_factory,
                                                                       script):
    """Each step writes an event to run a or b, or (True) waits until both writers
    closed their connections first: every reopen must find the same file."""
    d = str(tmp_path_factory.mktemp("s") / "audit")
    pool = WriterPool()
    ws = {r: _writer(d, r, pool) for r in "ab"}
    files = {r: w.wait_open() for r, w in ws.items()}
    sent: dict[str, dict[str, int]] = {"a": {}, "b": {}}
    for i, (run, n, pause) in enumerate(script, 1):
        path = f"/{run}/{n}"
        ws[run].put(_event(i, path))
        sent[run][path] = sent[run].get(path, 0) + 1
        if pause:
            assert _until(lambda: all(not f.is_open for f in files.values()))
    for r in "ab":
        ws[r].close()
        files[r].close()
        got = {x["path"]: x["count"] for x in sandbox.audit.records(r, db=d)}
        assert got == sent[r]
        assert ws[r].dropped == 0 and ws[r].error is None


@pytest.mark.isolation
def test_the_monitor_host_holds_no_connection_to_a_quiet_live_run(tmp_path, py):
    from sandbox.launcher.launcher import Launcher
    from sandbox.policy import load_policy
    from sandbox.policy.model import AuditPolicy
    la = Launcher(capture_output=True)
    la.audit_db = str(tmp_path / "audit")
    pol = load_policy("default")
    pol = pol.replace(audit=AuditPolicy(files="all"))
    # Reads one file, then sleeps: no audited access until we cancel it.
    marker = f"quiet-run-{os.getpid()}-{time.monotonic_ns()}"
    h = la.start([py, "-I", "-S", "-c", "open('/etc/hostname').read()\n"
                  f"import time\ntime.sleep(120) # {marker}"], policy=pol)
    try:
        # Quiet only once the program sleeps: the store's file exists (and holds no
        # connection yet) before the program's first records reach the writer.
        assert _until(lambda: _sleeping(marker), 60), "the program never reached its sleep"
        assert _until(lambda: os.path.isdir(la.audit_db) and any(
            n.endswith(".sqlite") for n in os.listdir(la.audit_db)))
        host = la.forkserver_pid        # the monitor host: it writes every run's store
        assert host
        (name,) = [n for n in os.listdir(la.audit_db) if n.endswith(".sqlite")]
        path = os.path.join(la.audit_db, name)

        def stored_its_read() -> bool:   # read along: the run's access is in its file
            try:
                return "/etc/hostname" in {x["path"] for x in sandbox.audit.records(
                    h.run_id, db=la.audit_db)}
            except Exception:   # not yet created, or locked by the writer's commit
                return False
        # the program read its file (quiet before that is the start, not the sleep)...
        assert _until(stored_its_read, 60)
        # ...then quiet: the lock fd only, no connection, no mmap'ed -shm.
        assert _until(lambda: _holds(host, path) == (1, False), 60), _holds(host, path)
    finally:
        h.cancel()
    r = h.wait()
    assert r.status == "cancelled", (r.status, r.reason, r.stderr)
    got = {x["path"] for x in sandbox.audit.records(r.run_id, db=la.audit_db)}
    assert "/etc/hostname" in got
    a = r.audit
    assert a["dropped"] == 0 and a.get("db_error") is None
    assert a["records"] == a["stored_events"] + a["not_stored"] + a["dropped"]
    la.close()


_BURST = r"""
import os, sys, tempfile, time
from sandbox.audit import store, writer

def private():
    with open("/proc/self/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f
                   if line.startswith(("Private_Dirty", "Private_Clean")))

def run(pool, d, name):
    return writer.Writer(lambda: store.create_run(d, name, policy="p", files="all",
                                                  mode="exec", argv=None), pool=pool)

d = tempfile.mkdtemp()
pool = writer.WriterPool()
run(pool, d, "f" * 32).wait_open()          # the pool's thread and its arena exist
time.sleep(2 * writer.TRIM_SECONDS)
base = private()
ws = [run(pool, d, "%032x" % i) for i in range(50)]
files = [w.wait_open() for w in ws]
for i, w in enumerate(ws):
    w.put((1, time.time(), 100, "read", "openat", f"/x/{i}", None, True, "r", "kernel", None))
end = time.monotonic() + 10
while any(f.is_open for f in files) and time.monotonic() < end:
    time.sleep(0.05)
assert not any(f.is_open for f in files)
time.sleep(2 * writer.TRIM_SECONDS + 4 * writer.FLUSH_SECONDS)
print(private() - base)
"""


def test_a_burst_of_connections_gone_idle_gives_its_memory_back(tmp_path):
    """Fifty runs' connections opened at once (~120 KiB of C heap each, on the writer's
    thread) and gone idle leave the process's private memory near where it was: the
    pool trims the heap after closing them. Before the trim they left ~6 MiB resident,
    freed but below a live chunk of the thread's arena (issue 14: the monitor host's
    growth per live run). Measured in a fresh interpreter, from its own smaps."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", _BURST], capture_output=True, text=True,
                         timeout=120, cwd=str(tmp_path),
                         env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(
                             os.path.abspath(sandbox.audit.__file__)))})
    assert out.returncode == 0, out.stderr
    grown_kib = int(out.stdout.split()[-1])
    assert grown_kib < 50 * 40, f"{grown_kib} KiB still resident after 50 idle connections"

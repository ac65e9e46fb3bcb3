"""The audit loop's compiled fast path (sandbox/_native/notify_fast.c, issue 15.3).

It answers repeats of calls the Python loop decided, so everything here compares it
with the Python loop on the same program, judged from the host side: the run's
store (every record, folded counts, order), the run's summary, the caller's own
results. The runs are real forked children under the seccomp layer of their
policy, attached to a real hub (tests/notify_hub_harness.py).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time

import pytest
from hypothesis import example, given, settings, strategies as st

from notify_hub_harness import HANG_GUARD, HubRun, audit_policy, end_flood, records, until, \
    wait_exit
from sandbox.monitor import notify_fast
from sandbox.monitor.notify_hub import Hub

pytestmark = pytest.mark.isolation



@pytest.fixture
def fast_lib():
    lib = notify_fast.load()
    assert lib is not None, (f"the compiled fast path is not built ({notify_fast.LIB_PATH}): "
                             "reinstall the package (pip install -e .)")
    return lib


def _run(body, tmp: str, *, fast: bool, policy=None, run_id: str = "r"):
    """Run `body` in a child under the audit; (summary, records, exit code)."""
    db = os.path.join(tmp, "audit")
    saved = notify_fast.load
    if not fast:
        notify_fast.load = lambda: None     # the Python loop for every call
    try:
        hub = Hub()
        run = HubRun(hub, policy or audit_policy(), run_id, db, body)
    finally:
        notify_fast.load = saved
    run.go()
    deadline = time.monotonic() + HANG_GUARD
    while True:
        pid, status = os.waitpid(run.pid, os.WNOHANG)
        if pid:
            code = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            run.kill()
            pytest.fail("the run did not finish")
        time.sleep(0.01)
    summary, _ = run.finish()
    if not fast:
        assert run.loop.fast_answered == 0
    return summary, records(db, run_id), code, run.loop.fast_answered


def _rows(recs, under: str):
    return [(r["operation"], r["syscall"], r["path"], r["flags"], r["verdict"], r["rule"],
             r["count"]) for r in recs if r["path"].startswith(under)]


def test_repeats_are_answered_in_c_and_every_one_is_recorded(fast_lib, tmp_path):
    target = tmp_path / "f"
    target.write_text("x")

    def body():
        for _ in range(500):
            os.close(os.open(str(target), os.O_RDONLY))
        os.close(os.open(str(target), os.O_RDONLY | os.O_NOFOLLOW))   # another key

    summary, recs, code, answered = _run(body, str(tmp_path), fast=True)
    assert code == 0
    rows = _rows(recs, str(target))
    assert [(r[0], r[1], r[2], r[4], r[6]) for r in rows] == \
        [("read", "openat", str(target), "allowed", 500),
         ("read", "openat", str(target), "allowed", 1)], rows
    assert "O_NOFOLLOW" not in rows[0][3] and "O_NOFOLLOW" in rows[1][3], rows
    assert answered >= 499          # all but the first were answered without Python
    assert summary.fast_answered == answered
    assert summary.records == summary.stored_events and summary.dropped == 0


def test_a_path_across_a_page_end_is_answered_in_c_too(fast_lib, tmp_path):
    """A path whose bytes run over the end of a page into the next (where an allocator
    may well put a program's path, at every call): the compiled loop reads it in two
    pieces and answers its repeats. It read only up to the page end, found no NUL and
    handed every such call to Python: 0 answered in C (seen as an intermittent
    `answered >= 499` failure above, when a run's path buffer happened to straddle)."""
    target = tmp_path / "f"
    target.write_text("x")

    def body():
        import ctypes
        import mmap
        m = mmap.mmap(-1, 2 * mmap.PAGESIZE)
        raw = os.fsencode(str(target)) + b"\0"
        off = mmap.PAGESIZE - len(raw) // 2          # half on each page
        m[off:off + len(raw)] = raw
        addr = ctypes.c_void_p(ctypes.addressof(ctypes.c_char.from_buffer(m, off)))
        libc = ctypes.CDLL(None, use_errno=True)
        for _ in range(200):
            fd = libc.open(addr, os.O_RDONLY)
            assert fd >= 0, ctypes.get_errno()
            os.close(fd)

    summary, recs, code, answered = _run(body, str(tmp_path), fast=True)
    assert code == 0
    assert [(r[2], r[6]) for r in _rows(recs, str(target))] == [(str(target), 200)]
    assert answered >= 199, answered


def test_a_final_name_replaced_by_a_link_from_outside_is_seen_at_once(fast_lib, tmp_path):
    """The attack on a cache: the name the compiled loop answers is made a symlink by a
    process it does not watch (here the host; a sibling sandbox sharing the tree could).
    Every later open must be recorded as the link's target, as the Python loop does
    (it reads the final name again on every call): the C loop re-checks it (readlinkat)."""
    d = tmp_path / "d"
    d.mkdir()
    (d / "f").write_text("decoy")
    (d / "secret").write_text("secret")
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()

    def body():
        for _ in range(50):
            os.close(os.open(str(d / "f"), os.O_RDONLY))
        os.write(done_w, b"1")
        os.read(go_r, 1)                     # the host swaps d/f for a link to d/secret
        for _ in range(50):
            os.close(os.open(str(d / "f"), os.O_RDONLY))

    db = str(tmp_path / "audit")
    run = HubRun(Hub(), audit_policy(), "swap", db, body)
    run.go()
    assert os.read(done_r, 1) == b"1"
    os.symlink(str(d / "secret"), str(d / "tmp"))
    os.rename(str(d / "tmp"), str(d / "f"))
    os.write(go_w, b"1")
    assert run.wait() == 0
    run.finish()
    rows = {(r["path"], r["count"]) for r in records(db, "swap") if r["path"].startswith(str(d))}
    assert rows == {(str(d / "f"), 50), (str(d / "secret"), 50)}, rows
    assert run.loop.fast_answered >= 49
    for fd in (go_r, go_w, done_r, done_w):
        os.close(fd)


def test_a_denied_path_is_refused_every_time_never_answered_in_c(fast_lib, tmp_path):
    from sandbox.policy.model import AuditPolicy, FilesystemPolicy, NetworkPolicy, Policy
    secret = tmp_path / "secret"
    secret.write_text("s")
    pol = Policy(filesystem=FilesystemPolicy(read=("/",), deny=(str(secret),)),
                 audit=AuditPolicy(files="all"), network=NetworkPolicy(mode="host"))
    out_r, out_w = os.pipe()

    def body():
        refused = 0
        for _ in range(100):
            try:
                os.close(os.open(str(secret), os.O_RDONLY))
            except PermissionError:
                refused += 1
        os.write(out_w, str(refused).encode())

    summary, recs, code, answered = _run(body, str(tmp_path), fast=True, policy=pol)
    assert code == 0
    assert os.read(out_r, 16) == b"100"
    rows = _rows(recs, str(secret))
    assert [(r[0], r[4], r[6]) for r in rows] == [("read", "denied", 100)], rows
    assert summary.monitor_denied == 100
    os.close(out_r)
    os.close(out_w)


# -- the compiled loop and the Python loop record the same things ----------------------------

NAMES = ["f", "g", "l", "dl/x", "dl/y", "sub", "missing", "./f", "sub/../f", "dl",
         "sub/y", "dl/../f", "h", "sub/z", "dl/x2", "sub2/x", ".", "sub/."]
FLAGS = [os.O_RDONLY, os.O_RDONLY | os.O_NOFOLLOW, os.O_RDONLY | os.O_CLOEXEC,
         os.O_WRONLY | os.O_CREAT, os.O_RDONLY | os.O_DIRECTORY]
OPS = st.one_of(
    st.tuples(st.just("open"), st.sampled_from(NAMES), st.sampled_from(FLAGS)),
    st.tuples(st.just("stat"), st.sampled_from(NAMES), st.booleans()),
    st.tuples(st.just("rel"), st.sampled_from(NAMES), st.sampled_from(FLAGS)),
    # a final name, or a directory on the way (dl), made a link to something else
    st.tuples(st.just("swap"), st.sampled_from(["f", "dl", "l"]),
              st.sampled_from(["g", "sub", "sub2"])),
    st.tuples(st.just("unlink"), st.sampled_from(["f", "l", "sub/y"]), st.just(0)),
    # one spelling, another object: through the caller's cwd and a descriptor (F2)
    st.tuples(st.just("cd"), st.sampled_from([".", "sub", "sub2", "dl"]), st.just(0)),
    st.tuples(st.just("proc"), st.sampled_from(NAMES), st.sampled_from(FLAGS)),
    st.tuples(st.just("pfd"), st.sampled_from(NAMES), st.sampled_from(FLAGS)),
    st.tuples(st.just("statfs"), st.sampled_from(NAMES), st.just(0)),   # F8: audited too
    st.tuples(st.just("pself"), st.sampled_from(["/proc/self/stat", "/proc/thread-self/stat",
                                                 "/proc/self/../self/status"]), st.just(0)),
)


def _tree(d: str) -> None:
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(os.path.join(d, "sub"))
    os.makedirs(os.path.join(d, "sub2"))
    for n in ("f", "g", "sub/x", "sub/y", "sub2/x", "sub2/y"):
        with open(os.path.join(d, n), "w") as f:
            f.write(n)
    os.symlink("f", os.path.join(d, "l"))
    os.symlink("sub", os.path.join(d, "dl"))


def _program(d: str, ops):
    def body():
        os.chdir(d)
        sub = os.open(os.path.join(d, "sub"), os.O_PATH)
        for kind, name, arg in ops:
            for _ in range(3):               # repeats: what the compiled loop answers
                try:
                    if kind == "open":
                        os.close(os.open(os.path.join(d, name), arg))
                    elif kind == "rel":
                        os.close(os.open(name, arg))
                    elif kind == "stat":
                        os.stat(os.path.join(d, name), follow_symlinks=arg)
                    elif kind == "pself":       # the same record for every caller
                        os.close(os.open(name, os.O_RDONLY))
                    elif kind == "statfs":
                        os.statvfs(os.path.join(d, name))
                    elif kind == "cd":
                        os.chdir(os.path.join(d, name))
                    elif kind == "proc":
                        os.close(os.open(f"/proc/self/cwd/{name}", arg))
                    elif kind == "pfd":
                        os.close(os.open(f"/proc/self/fd/{sub}/../{name}", arg))
                    elif kind == "swap":     # the name becomes a link (made in the sandbox)
                        tmp = os.path.join(d, "tmp-link")
                        os.symlink(arg, tmp)
                        os.rename(tmp, os.path.join(d, name))
                    else:
                        os.unlink(os.path.join(d, name))
                except OSError:
                    pass
    return body


# /tmp is one of the policy's sandbox areas, whose names are decided apart (never a
# directory key); /var/tmp is a plain directory, where every name is decided alike
@pytest.mark.parametrize("where", ["/tmp", "/var/tmp"])
@settings(derandomize=True, max_examples=20, deadline=None)
@given(ops=st.lists(OPS, min_size=1, max_size=25))
@example([("open", "dl/x", os.O_RDONLY), ("swap", "dl", "sub2"), ("open", "dl/x", os.O_RDONLY)])
@example([("stat", "dl/y", False), ("swap", "dl", "sub2"), ("stat", "dl/y", False)])
@example([("open", "l", os.O_RDONLY), ("swap", "l", "g"), ("open", "l", os.O_RDONLY),
          ("unlink", "l", 0), ("open", "l", os.O_RDONLY)])
@example([("proc", "f", os.O_RDONLY), ("cd", "sub", 0), ("proc", "f", os.O_RDONLY),
          ("proc", "x", os.O_RDONLY), ("cd", "dl", 0), ("proc", "../g", os.O_RDONLY),
          ("pfd", "sub/x", os.O_RDONLY), ("swap", "dl", "sub2"), ("pfd", "dl/x", os.O_RDONLY),
          ("statfs", "dl/x", 0), ("statfs", "l", 0), ("swap", "l", "g"), ("statfs", "l", 0),
          ("pself", "/proc/self/stat", 0), ("pself", "/proc/thread-self/stat", 0)])
@example([("stat", "f", True), ("stat", "h", True), ("swap", "g", "sub"), ("stat", "g", True),
          ("stat", "missing", True), ("open", "l", os.O_RDONLY), ("unlink", "l", 0),
          ("stat", "l", True), ("stat", "dl/x", False), ("stat", "dl/x2", True)])
def test_the_compiled_loop_records_what_the_python_loop_records(where, ops):
    assert notify_fast.load() is not None, "the compiled fast path is not built"
    base = tempfile.mkdtemp(prefix="nf-eq-", dir=where)
    try:
        d = os.path.join(base, "d")
        seen = []
        for fast in (True, False):
            _tree(d)
            tmp = tempfile.mkdtemp(dir=base)
            summary, recs, code, answered = _run(_program(d, ops), tmp, fast=fast)
            assert code == 0
            assert not [r for r in recs if r["path"].startswith(("/proc/self/cwd",
                                                                 "/proc/self/fd/"))]
            seen.append((_rows(recs, d) + _rows(recs, "/proc/"), summary.checked,
                         summary.records,
                         summary.by_operation, summary.errors, answered))
        (c_rows, *c_counts, c_answered), (py_rows, *py_counts, _) = seen
        assert c_rows == py_rows
        assert c_counts == py_counts
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_run_flooding_cached_calls_does_not_stall_another_run(fast_lib, tmp_path):
    """Eight threads of one run repeat one cached open without pause (the compiled loop
    answers them all); another run on the same hub, whose every open is new (Python's),
    still gets each answered and recorded once, in order."""
    import threading
    db = str(tmp_path / "audit")
    hub = Hub()

    def flood():
        def spin():
            while True:
                os.close(os.open("/etc/hostname", os.O_RDONLY))
        for _ in range(7):
            threading.Thread(target=spin, daemon=True).start()
        spin()

    def opens():
        for i in range(300):
            try:
                os.close(os.open(f"/tmp/nf-victim-{i}", os.O_RDONLY))
            except OSError:
                pass

    flooder = HubRun(hub, audit_policy(), "flooder", db, flood)
    victim = None
    try:
        flooder.go()
        until(lambda: flooder.loop.fast_answered >= 2000, "the flood did not start")
        victim = HubRun(hub, audit_policy(), "victim", db, opens)
        victim.go()
        assert wait_exit(victim, [flooder]) == 0
        before = flooder.loop.fast_answered
        audit, _ = victim.finish()
        assert audit.errors == 0 and audit.dropped == 0 and audit.vanished == 0, audit
        mine = [r["path"] for r in records(db, "victim") if r["path"].startswith("/tmp/nf-")]
        assert mine == [f"/tmp/nf-victim-{i}" for i in range(300)]
        time.sleep(0.1)
        assert flooder.loop.fast_answered > before    # still flooding, still answered in C
    finally:
        end_flood(flooder, victim)
    flooder.finish()
    assert not [r for r in records(db, "flooder") if r["path"].startswith("/tmp/nf-victim")]


# -- directory keys: a new name in a directory the policy decides alike ---------------------

@pytest.fixture
def plain_dir():
    """A directory outside the sandbox areas (/tmp is one: decided apart, never keyed)."""
    d = tempfile.mkdtemp(prefix="nf-dir-", dir="/var/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _both_loops(body, tmp_path, under: str):
    """`body` run under the compiled loop, then under the Python loop: for each, (its
    rows under `under`, its summary, the calls the compiled loop answered)."""
    got = []
    for fast in (True, False):
        summary, recs, code, answered = _run(body, str(tmp_path / str(fast)), fast=fast)
        assert code == 0
        got.append((_rows(recs, under), summary, answered))
    return got


def test_new_names_in_a_directory_are_answered_in_c_and_recorded_as_python_does(fast_lib,
                                                                               tmp_path,
                                                                               plain_dir):
    """Each name is new (no repeat to answer): the compiled loop answers them by their
    directory once Python decided one, and the records are the Python loop's, names that
    exist and names that do not."""
    d = plain_dir
    for i in range(0, 200, 2):
        with open(os.path.join(d, f"n{i}"), "w") as f:
            f.write("x")

    def body():
        for i in range(200):
            for follow in (True, False):
                try:
                    os.stat(os.path.join(d, f"n{i}"), follow_symlinks=follow)
                except OSError:
                    pass

    (c_rows, c_sum, c_answered), (py_rows, py_sum, _) = _both_loops(body, tmp_path, d)
    assert c_rows == py_rows and c_sum.checked == py_sum.checked
    assert len(c_rows) == 400
    assert c_answered >= 390, c_answered     # all but the first of each key


def test_a_new_name_that_is_a_link_made_from_outside_is_recorded_as_its_target(fast_lib,
                                                                              tmp_path,
                                                                              plain_dir):
    """The attack on a directory key: once the directory is keyed, the host (or a
    sibling) makes a new name in it a link to a file elsewhere. The open follows the
    link, so its record must name the target, as Python's would: the compiled loop
    examines each followed name (readlinkat) and hands a link to Python."""
    d = plain_dir
    secret = tmp_path / "secret"
    secret.write_text("s")
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    try:
        for n in ("a", "b"):
            with open(os.path.join(d, n), "w") as f:
                f.write(n)

        def body():
            for n in ("a", "b"):
                os.close(os.open(os.path.join(d, n), os.O_RDONLY))
            os.write(done_w, b"1")
            os.read(go_r, 1)
            os.close(os.open(os.path.join(d, "c"), os.O_RDONLY))

        db = str(tmp_path / "audit")
        run = HubRun(Hub(), audit_policy(), "dswap", db, body)
        run.go()
        assert os.read(done_r, 1) == b"1"
        os.symlink(str(secret), os.path.join(d, "c"))
        os.write(go_w, b"1")
        assert run.wait() == 0
        run.finish()
        paths = [r["path"] for r in records(db, "dswap")
                 if r["path"].startswith((d, str(secret)))]
        assert paths == [os.path.join(d, "a"), os.path.join(d, "b"), str(secret)], paths
        assert run.loop.fast_answered >= 1          # "b" was answered by its directory
    finally:
        for fd in (go_r, go_w, done_r, done_w):
            os.close(fd)


def test_a_directory_with_a_denied_name_is_never_keyed(fast_lib, tmp_path, plain_dir):
    """A deny rule names one child of the directory: its other names are not all
    decided alike, so no directory key; the denied name is refused every time, even
    after many allowed neighbours."""
    from sandbox.policy.model import AuditPolicy, FilesystemPolicy, NetworkPolicy, Policy
    d = plain_dir
    for n in ("a", "b", "c", "secret"):
        with open(os.path.join(d, n), "w") as f:
            f.write(n)
    pol = Policy(filesystem=FilesystemPolicy(read=("/",), deny=(os.path.join(d, "secret"),)),
                 audit=AuditPolicy(files="all"), network=NetworkPolicy(mode="host"))
    out_r, out_w = os.pipe()

    def body():
        refused = 0
        for n in ("a", "b", "c", "secret", "a", "secret"):
            try:
                os.close(os.open(os.path.join(d, n), os.O_RDONLY))
            except PermissionError:
                refused += 1
        os.write(out_w, str(refused).encode())

    try:
        summary, recs, code, _ = _run(body, str(tmp_path), fast=True, policy=pol)
        assert code == 0 and os.read(out_r, 16) == b"2"
    finally:
        os.close(out_r)
        os.close(out_w)
    assert summary.monitor_denied == 2
    rows = [(r[2], r[4], r[6]) for r in _rows(recs, d)]
    assert (os.path.join(d, "secret"), "denied", 2) in rows, rows


def test_a_new_directory_answers_the_runs_other_calls_from_its_first(fast_lib, tmp_path,
                                                                     plain_dir):
    """An import stats a name and opens another: once a directory key was made for
    each (syscall, flags) somewhere, a new directory's first call keys the others
    there too, so only that first call is Python's; the records are the Python
    loop's all the same."""
    top = plain_dir
    for i in range(20):
        os.makedirs(os.path.join(top, f"d{i}"))
        for n in ("a.py", "b.py"):
            with open(os.path.join(top, f"d{i}", n), "w") as f:
                f.write(n)

    def body():
        for i in range(20):
            d = os.path.join(top, f"d{i}")
            os.stat(os.path.join(d, "a.py"))
            os.close(os.open(os.path.join(d, "b.py"), os.O_RDONLY | os.O_CLOEXEC))
            assert not os.path.lexists(os.path.join(d, "zz"))   # an lstat

    (c_rows, _, c_answered), (py_rows, _, _) = _both_loops(body, tmp_path, top)
    assert c_rows == py_rows
    # per directory: stat a.py (Python's, the first), open b.py and lstat zz (keyed
    # by it from the first directory on: 38 calls, 0 without that; a key the table
    # has no room for, two of a pair taken by newer keys, goes back to Python)
    assert c_answered >= 30, c_answered


def test_fstat_by_another_name_is_answered_in_c_and_a_path_with_the_flag_is_recorded(
        fast_lib, tmp_path):
    """glibc's fstat(2) is newfstatat(fd, "", AT_EMPTY_PATH): no path, so the Python loop
    answers it and records nothing (a third of an import's notified calls). The compiled
    loop answers it too, counted the same. A real path with AT_EMPTY_PATH is a lookup
    like any other: recorded, whichever loop answers."""
    import ctypes
    target = tmp_path / "f"
    target.write_text("x")

    def body():
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(256)
        fd = os.open(str(target), os.O_RDONLY)
        for _ in range(200):
            os.fstat(fd)
        for _ in range(3):   # AT_FDCWD, a path, AT_EMPTY_PATH (0x1000)
            assert libc.fstatat(-100, os.fsencode(str(target)), buf, 0x1000) == 0
        os.close(fd)

    (c_rows, c_sum, c_answered), (py_rows, py_sum, _) = _both_loops(body, tmp_path,
                                                                     str(target))
    assert c_rows == py_rows and (c_sum.checked, c_sum.records) == \
        (py_sum.checked, py_sum.records)
    assert [(r[1], r[2], r[6]) for r in c_rows if r[1] == "newfstatat"] == \
        [("newfstatat", str(target), 3)], c_rows
    assert c_answered >= 200 + 2, c_answered

"""What the monitor host holds per live run, and what its housekeeping holds at once.

Issue 14: one monitor host watches every run of a launcher and its own memory may
grow by at most 64 KiB per run it watches. These tests pin the structures that
used to grow with the runs (or with the audit store) to bounds that do not:

- the audit store's size-cap sweep, run in the host's writer thread, holds only
  the runs it deletes, never a list of the whole directory (a store kept at its
  cap held 50,000 names: ~20 MiB on the host's heap, whose pages stayed the
  host's after the sweep);
- the page buffer that reads a sandboxed thread's memory is one per reading
  thread, not two per run;
- the audit engine keeps one cache of verdicts, not two;
- the notification dispatch tables are one per syscall policy, shared by its runs.
"""
from __future__ import annotations

import os
import threading
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.audit import retention, store


def _runs(d: str, spec: list[tuple[int, int]]) -> list[str]:
    """Run files of the given (size, mtime) in `d` (plain files: the sweep only stats,
    locks and unlinks them)."""
    os.makedirs(d, exist_ok=True)
    out = []
    for i, (size, mtime) in enumerate(spec):
        p = os.path.join(d, f"r{i:05d}{store.SUFFIX}")
        with open(p, "wb") as f:
            f.write(b"x" * size)
        os.utime(p, ns=(mtime, mtime))
        out.append(p)
    return out


def _reference(spec: list[tuple[int, int]], paths: list[str], cap: int,
               keep: str | None) -> set[str]:
    """What the cap must delete: oldest first (equal mtimes: the greater name first, as
    the sweep orders them), skipping `keep`, until the directory fits."""
    total = sum(size for size, _ in spec)
    gone = set()
    order = sorted(zip(spec, paths), key=lambda e: e[1], reverse=True)
    for (size, mtime), p in sorted(order, key=lambda e: e[0][1]):
        if total <= cap:
            break
        if p == keep:
            continue
        gone.add(p)
        total -= size
    return gone


@settings(derandomize=True, max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 40)), min_size=1, max_size=40),
       st.integers(0, 60_000), st.booleans())
def test_the_cap_deletes_the_oldest_runs_until_the_store_fits(tmp_path_factory, spec, cap,
                                                                with_keep):
    d = str(tmp_path_factory.mktemp("audit"))
    spec = [(size, mtime * 1_000_000_000) for size, mtime in spec]
    paths = _runs(d, spec)
    keep = paths[0] if with_keep else None
    want = _reference(spec, paths, cap, keep)
    deleted = retention.enforce_cap(d, cap, keep=keep)
    left = {os.path.join(d, n) for n in os.listdir(d)}
    assert deleted == len(want)
    assert {p for p in paths if p not in left} == want     # the oldest, and no more
    if keep is not None:
        assert keep in left
    assert sum(os.path.getsize(p) for p in left) <= cap or left <= {keep}


def test_the_cap_sweep_holds_what_it_deletes_not_the_directory(tmp_path):
    """3,000 runs in a store 5 runs over its cap: the sweep's Python allocations at their
    peak stay far below one entry per run (the old sweep listed every name and kept an
    (mtime, path) tuple of each: ~500 KiB here, ~20 MiB at 50,000 runs)."""
    d = str(tmp_path / "audit")
    n, size = 3000, 100
    paths = _runs(d, [(size, (i + 1) * 1_000_000_000) for i in range(n)])
    cap = (n - 5) * size
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        deleted = retention.enforce_cap(d, cap)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    print(f"cap sweep over {n} runs: peak {peak / 1024:.1f} KiB")
    assert deleted == 5 and not any(os.path.exists(p) for p in paths[:5])
    assert all(os.path.exists(p) for p in paths[5:])
    assert peak < 64 * 1024, peak


def test_a_live_run_is_skipped_and_the_next_oldest_goes(tmp_path):
    import fcntl
    d = str(tmp_path / "audit")
    paths = _runs(d, [(100, (i + 1) * 1_000_000_000) for i in range(10)])
    fd = os.open(paths[0], os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)                    # run 0 is still being written
        assert retention.enforce_cap(d, 800) == 2
    finally:
        os.close(fd)
    assert os.path.exists(paths[0])
    assert not os.path.exists(paths[1]) and not os.path.exists(paths[2])
    assert os.path.exists(paths[3])


def test_reading_a_threads_memory_holds_one_page_per_thread_not_per_reader():
    from sandbox.monitor import proc_mem
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        readers = [proc_mem.ProcMem() for _ in range(100)]
        per_reader = (tracemalloc.get_traced_memory()[0] - base) / len(readers)
    finally:
        tracemalloc.stop()
    assert per_reader < 64, per_reader          # was 2 x 4 KiB per run
    # each thread reads into its own page: two threads never share one
    pages: dict[str, object] = {}     # kept alive: an ended thread's page could be reused

    def note(name: str) -> None:
        pages[name] = proc_mem._page()
    ts = [threading.Thread(target=note, args=(f"t{i}",)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    note("main")
    assert len({id(p) for p in pages.values()}) == 3
    assert proc_mem._page() is pages["main"]        # and a thread keeps its own
    # and it still reads: this process's own memory
    data = b"hello, page"
    buf = __import__("ctypes").create_string_buffer(data)
    got = readers[0].read_cstr(os.getpid(), __import__("ctypes").addressof(buf), 64)
    assert got == data


def test_the_audit_engine_keeps_one_cache_of_verdicts():
    from sandbox.audit.verdicts import AuditEngine
    from sandbox.policy import load_policy, resolve
    from sandbox.policy.plan import FsPlan
    from sandbox.policy import default_variables
    pol = resolve(load_policy("default"), default_variables("/nonexistent-w", "/nonexistent-o"))
    eng = AuditEngine(pol, FsPlan())
    for i in range(50):
        eng.decide("read", f"/usr/lib/x{i}")
        eng.decide("write", f"/etc/y{i}")
    assert len(eng._cache) == 100
    assert len(eng.engine._cache) == 0       # the inner engine decides, never keeps


def test_engines_of_one_policy_share_each_paths_rules_but_their_own_directories(tmp_path):
    """The host builds an engine per live run; each literal path's {kind: rule} was a dict
    of that engine's own (~2 KiB per run). Runs of one policy now share them, but for the
    paths that are the run's own, and decide alike."""
    from sandbox.policy import default_variables, load_policy, resolve
    from sandbox.policy.engine import Engine
    engines = []
    for i in range(2):
        for d in (f"w{i}", f"o{i}"):
            (tmp_path / d).mkdir()
        pol = resolve(load_policy("default"), default_variables(str(tmp_path / f"w{i}"),
                                                                str(tmp_path / f"o{i}")))
        engines.append(Engine(pol))
    a, b = engines
    common = set(a.allow_literal) & set(b.allow_literal)
    assert common and all(a.allow_literal[k] is b.allow_literal[k] for k in common)
    own = set(a.allow_literal) - common
    assert own and all(k.startswith(str(tmp_path)) for k in own)
    theirs = [id(v) for v in b.allow_literal.values()]
    assert all(id(a.allow_literal[k]) not in theirs for k in own)
    assert any("write" in a.allow_literal[k] for k in own)   # the run's ${OUTPUT}
    for k in common:
        for op in ("read", "write", "exec"):
            assert a.decide(op, k).allowed == b.decide(op, k).allowed


def test_dispatch_tables_are_shared_by_the_runs_of_one_syscall_policy():
    from sandbox.monitor import notify_dispatch
    a = notify_dispatch.table("default", (), (), "errno", "all", "host")
    b = notify_dispatch.table("default", (), (), "errno", "all", "host")
    assert all(x is y for x, y in zip(a, b))
    c = notify_dispatch.table("default", (), (), "errno", "none", "host")
    assert c[1] is not a[1] and len(c[1]) < len(a[1])
    try:
        a[1][0] = ("x", None)  # type: ignore[index]
    except TypeError:
        pass
    else:
        raise AssertionError("a shared table must be read-only")


# -- the C heap a live audited run holds in the host (mallinfo2) ---------------------------

class _MallInfo2(__import__("ctypes").Structure):
    _fields_ = [(name, __import__("ctypes").c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]


def _c_heap() -> int:
    """Bytes malloc has handed out in this process and not yet got back (glibc's
    mallinfo2: in-use chunks of its arenas plus its mmap'ed chunks). Python objects of
    more than 512 bytes, ctypes buffers and the fast path's C cache live here; pymalloc's
    small objects do not (they live in its own mmap'ed arenas)."""
    import ctypes
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _MallInfo2
    m = libc.mallinfo2()
    return int(m.uordblks + m.hblkhd)


def _hold_after(paths: list[str], done_w: int, hold_r: int):
    """A run's program: open each path twice (the second time the compiled loop answers
    it, as a run's repeated library and config opens are), say so, then stay alive."""
    def body() -> None:
        for p in paths:
            for _ in range(2):
                os.close(os.open(p, os.O_RDONLY))
        os.write(done_w, b"1")
        os.read(hold_r, 1)
    return body


@pytest.mark.isolation
def test_a_live_audited_run_holds_little_c_heap_in_the_host(tmp_path):
    """Issue 14: the monitor host grows by at most 64 KiB per live run, and its audited
    runs were most of it. N live runs on one hub, each having opened 16 files (a small
    program's start: its libraries, locale, config), each then staying alive: the host's
    C heap grows by (with N live - before) / N per run. The compiled fast path's cache
    was a 128-entry table of 276-byte slots per run (35 KiB, whatever the run opened);
    its entries are now sized to the paths they hold."""
    import gc
    from notify_hub_harness import HubRun, audit_policy
    from sandbox.monitor import notify_fast
    from sandbox.monitor.notify_hub import Hub
    if notify_fast.load() is None:
        pytest.fail(f"the compiled fast path is not built ({notify_fast.LIB_PATH})")
    files = []
    for i in range(16):
        p = tmp_path / f"lib{i:02d}.so.6"
        p.write_text("x")
        files.append(str(p))
    db = str(tmp_path / "audit")
    hub = Hub()
    done_r, done_w = os.pipe()
    hold_r, hold_w = os.pipe()
    runs: list[HubRun] = []

    def start(n: int, tag: str) -> None:
        for i in range(n):
            run = HubRun(hub, audit_policy(), f"{tag}{i}", db, _hold_after(files, done_w, hold_r))
            runs.append(run)
            run.go()
        for _ in range(n):
            assert os.read(done_r, 1) == b"1"

    def settle() -> int:
        import time
        time.sleep(0.5)              # the writer's flushes done, idle files closed
        gc.collect()
        return _c_heap()

    try:
        start(2, "warm")             # imports, the hub's thread, the writer's pool
        base = settle()
        n = 20
        start(n, "live")
        live = settle()
        per_run = (live - base) / n
        print(f"host C heap per live audited run: {per_run / 1024:.1f} KiB")
        assert per_run < 16 * 1024, f"{per_run / 1024:.1f} KiB of C heap per live run"
    finally:
        os.write(hold_w, b"1" * len(runs))
        for r in runs:
            try:
                r.wait()
            except ChildProcessError:
                pass
            r.finish()
        for fd in (done_r, done_w, hold_r, hold_w):
            os.close(fd)
    # the compiled loop answered the runs' repeats (most of them: a path whose NUL lies on
    # the caller's next page, for one, is the Python loop's): its cache was measured
    answered = [r.loop.fast_answered for r in runs]
    assert sum(answered) >= len(runs) * len(files) // 2, answered


def test_runs_of_one_program_share_their_verdict_and_record_keys(tmp_path):
    """Each run's audit cached its verdicts under (operation, path) and folded its records
    under an 8-item key: tuples of its own, the same as the run before it (~6 KiB per
    live run of `ls`). Held once now, and each run still decides, folds and stores as
    before: equal keys, by the dicts' own equality."""
    from sandbox.audit import records, store as st_
    from sandbox.audit.verdicts import AuditEngine
    from sandbox.audit.writer import Writer, WriterPool
    from sandbox.policy import default_variables, load_policy, resolve
    from sandbox.policy.plan import FsPlan
    pol = resolve(load_policy("default"), default_variables("/nonexistent-w", "/nonexistent-o"))
    engines = [AuditEngine(pol, FsPlan()) for _ in range(2)]
    for eng in engines:
        for i in range(20):       # paths made anew per run, as the resolver makes them
            assert eng.decide("read", "/usr/lib/" + f"x{i}").allowed
            assert not eng.decide("write", "/etc/" + f"y{i}").allowed
    a, b = (list(e._cache) for e in engines)
    assert a == b and all(x is y for x, y in zip(a, b))

    d = str(tmp_path / "audit")
    pool = WriterPool()
    ws = [Writer(lambda r=r: st_.create_run(d, r, policy="p", files="all", mode="exec",
                                            argv=None), pool=pool) for r in ("r1", "r2")]
    for w in ws:
        w.wait_open()
        for i in range(30):
            w.put((i + 1, 1.0, 7, "read", "openat", "/usr/lib/" + f"x{i % 10}", None, True,
                   "filesystem.read: /usr", "kernel", None))
        w.close()
        w.file.close()
    ka, kb = (sorted(w._keys, key=lambda k: k[2]) for w in ws)
    assert ka == kb and all(x is y for x, y in zip(ka, kb))
    for r in ("r1", "r2"):
        got = {x["path"]: x["count"] for x in records(r, db=d)}
        assert got == {f"/usr/lib/x{i}": 3 for i in range(10)}


def test_a_table_gives_every_thread_the_one_copy_and_lets_go_of_the_unheld():
    """No lock (the broker child, forked while threads run, uses one): each step is one
    dict operation, so threads racing to hold equal values all get the first one."""
    from sandbox.monitor.interned import Table
    table = Table()
    got: list[list[tuple[str, int]]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def worker(out: list[tuple[str, int]]) -> None:
        start.wait()
        for i in range(500):
            out.append(table.hold(("k", i)))
    threads = [threading.Thread(target=worker, args=(g,)) for g in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for i in range(500):
        assert len({id(g[i]) for g in got}) == 1     # one copy, whoever asked first
    del got, threads
    table.prune()
    assert len(table.held) == 0                      # nothing else holds them


def test_a_table_of_keys_the_sandbox_chooses_stays_bounded():
    """The audit's key tables hold what sandboxes name (paths): a run that opens 20,000
    distinct files, each key still held by its run, must not grow them without bound.
    Past TABLE_MAX live keys a table starts again (costing only sharing)."""
    from sandbox.monitor.interned import TABLE_MAX, Table
    table = Table()
    live = [table.hold(("read", f"/tmp/f{i}")) for i in range(20_000)]
    assert len(table.held) <= 2 * TABLE_MAX
    assert all(k == ("read", f"/tmp/f{i}") for i, k in enumerate(live))


_COUNTING_SERVER = r"""
import gc, os, sys
from sandbox import forkserver
from sandbox.monitor import host as H
out = sys.argv[1]
_step = H.Host.step
def step(self):
    if gc.isenabled():
        gc.disable()       # refcounting alone: what the cyclic GC would free later stays
    if os.path.exists(out + ".ask"):
        os.unlink(out + ".ask")
        live = {id(r.sup) for r in self.runs if r.sup is not None}
        left = [type(o).__name__ for o in gc.get_objects()   # a live run's loop names it
                if type(o).__name__ == "Supervisor" and id(o) not in live
                or type(o).__name__ == "AuditLoop" and id(o.sup) not in live]
        with open(out + ".tmp", "w") as f:
            f.write(" ".join(left) or "none")
        os.rename(out + ".tmp", out)
    return _step(self)
H.Host.step = step
sys.exit(forkserver.main())
"""


@pytest.mark.isolation
def test_an_ended_run_leaves_nothing_for_the_cyclic_gc(tmp_path):
    """An ended run's supervisor, audit loop and their parts referred to one another, so
    refcounting never freed them: each ended run's graph (~13 KiB) waited in the host for
    a full collection, and the pages it had spread over stayed the host's (~30 KiB per
    ended run, growing burst after burst). Judged in the monitor host, with its cyclic
    GC off: after audited runs ended, none of their supervisors or loops is left."""
    import sys
    import time

    from sandbox.launcher import monitors
    from sandbox.launcher.launcher import Launcher
    out = str(tmp_path / "left")
    la = Launcher(forkserver=monitors.ForkServerClient(
        [sys.executable, "-I", "-c", _COUNTING_SERVER, out]))
    try:
        for _ in range(6):
            assert la.spawn(["/bin/true"], policy="strict").status == "ok"
        left = None
        for _ in range(20):      # each ask is answered by the host's next turn
            time.sleep(0.2)
            open(out + ".ask", "w").close()
            la.spawn(["/bin/true"], policy="strict")
            end = time.monotonic() + 5
            while not os.path.exists(out) and time.monotonic() < end:
                time.sleep(0.05)
            with open(out) as f:
                left = f.read()
            os.unlink(out)
            if left == "none":
                break
    finally:
        la.close()
    assert left == "none", f"ended runs' objects left for the cyclic GC: {left}"


def test_a_proxy_thread_that_outlives_its_run_records_nothing_after_dispose():
    """The proxy's stop joins its threads within a bound; one stuck in a lookup may
    record after the run's supervisor let go of its parts. It finds the loop disposed
    and keeps nothing, rather than failing in its thread."""
    from sandbox.monitor.notify_loop import AuditLoop
    loop = AuditLoop.__new__(AuditLoop)
    loop._detached = True
    assert loop.dispose()
    assert loop.sup is None and loop.writer is None
    loop.record_net(7, "example.test:443", "", False, "network: none", "refused")

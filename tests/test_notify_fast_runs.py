"""Runs of repeats reported as one record (issue 15.3) keep the audit's full recall.

The compiled loop (sandbox/_native/notify_fast.c) reports consecutive calls with one
key by one thread as one record with a count; `Writer.put_run` and `Tally.add_run`
take such a run. The audit must be exactly what one record per call gives: every
row with its count, first and last time, caller and sequence number, in the order
of first access; the summary's counts; the writer's accounting (stored, not stored
past the budget). Judged on the store's rows and the summaries, from the host side.
"""
from __future__ import annotations

import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.audit import store
from sandbox.audit.tally import Tally
from sandbox.audit.writer import Writer

KEYS = [("read", "openat", "/etc/hostname", "O_RDONLY", True, "filesystem.read: /"),
        ("read", "openat", "/etc/passwd", "O_RDONLY|O_CLOEXEC", True, "filesystem.read: /"),
        ("stat", "newfstatat", "/usr/lib", None, True, "filesystem.read: /"),
        ("write", "openat", "/etc/shadow", "O_WRONLY", False, "default: deny"),
        ("read", "openat", "/x/" + "long" * 60, "O_RDONLY", True, "filesystem.read: /")]
PIDS = [101, 102]

# (key, thread, how many consecutive calls, where the compiled loop's batch ends in them)
CALLS = st.lists(st.tuples(st.integers(0, len(KEYS) - 1), st.sampled_from(PIDS),
                           st.integers(1, 40), st.integers(0, 40)), min_size=1, max_size=30)


def _audit(tmp: str, run_id: str, budget: int, calls: list[tuple[int, int, int, int]],
           runs: bool) -> tuple[list[dict[str, Any]], dict[str, Any], tuple[int, ...]]:
    """Feed the calls to a writer and a tally: one record per call, or as the compiled
    loop reports them (a run per group of consecutive calls, cut where a batch ends)."""
    d = os.path.join(tmp, "audit")
    w = Writer(lambda: store.create_run(d, run_id, policy="p", files="all", mode="exec",
                                        argv=None), budget=budget)
    tally = Tally("all")
    seq, clock = 0, 1000.0
    for key, pid, n, cut in calls:
        op, syscall, path, flags, allowed, rule = KEYS[key]
        pieces = [n] if not runs else [p for p in (min(cut, n), n - min(cut, n)) if p]
        for k in ([1] * n if not runs else pieces):
            first = seq + 1
            event = (first, clock + first, pid, op, syscall, path, flags, allowed, rule,
                     "kernel", None)
            seq += k
            if k == 1:
                tally.add(first, pid, op, syscall, path, allowed, rule)
                w.put(event)
            else:
                tally.add_run(first, pid, op, syscall, path, allowed, rule, k)
                w.put_run(event, k, clock + seq)
            tally.recorded += k
    w.close()
    st_ = store.connect(d)
    try:
        rows = list(store.records(st_, run_id))
    finally:
        st_.close()
    for r in rows:
        r.pop("run_id", None)
    summary = tally.summary(denied=tally.denied)
    return rows, summary, (w.stored, w.stored_events, w.not_stored, w.dropped, w.events)


@settings(derandomize=True, max_examples=60, deadline=None)
@given(CALLS, st.integers(1, 6))
def test_runs_of_repeats_give_the_audit_one_record_per_call_gives(tmp_path_factory, calls,
                                                                  budget):
    tmp = str(tmp_path_factory.mktemp("runs"))
    one = _audit(tmp, "per-call", budget, calls, runs=False)
    run = _audit(tmp, "runs", budget, calls, runs=True)
    assert run[0] == one[0]          # rows: seq, first, last, count, pid, path... in order
    assert run[1] == one[1]          # checked, records, counts by operation, top paths, denied
    assert run[2] == one[2]          # stored rows and events, not stored, dropped, events
    stored, stored_events, not_stored, dropped, events = run[2]
    total = sum(n for _, _, n, _ in calls)
    assert events == total and stored_events + not_stored + dropped == total


def test_the_compiled_loops_runs_record_what_the_python_loop_records(tmp_path):
    """End to end, on a real hub: a program whose repeats come in runs (one key many
    times, two keys alternating, two threads on one key) recorded by the compiled loop,
    which reports its runs as one record each, and by the Python loop, one per call:
    the same rows, counts and order, and the same summary counts."""
    import threading

    import pytest

    from sandbox.audit import writer as writer_mod
    from sandbox.monitor import notify_fast
    from test_notify_fast import _rows, _run
    if notify_fast.load() is None:
        pytest.fail(f"the compiled fast path is not built ({notify_fast.LIB_PATH})")
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("a")
    b.write_text("b")

    def body() -> None:
        def opens(p: str, n: int) -> None:
            for _ in range(n):
                os.close(os.open(p, os.O_RDONLY))
        opens(str(a), 700)
        for _ in range(50):
            opens(str(b), 1)
            opens(str(a), 3)
        ts = [threading.Thread(target=opens, args=(str(b), 300)) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    runs: list[int] = []
    put_run = writer_mod.Writer.put_run

    def counted(self: Writer, event: tuple[Any, ...], count: int, last: float) -> None:
        runs.append(count)
        put_run(self, event, count, last)
    writer_mod.Writer.put_run = counted    # type: ignore[method-assign]
    try:
        seen = []
        for fast in (True, False):
            tmp = tmp_path / f"fast-{fast}"
            tmp.mkdir()
            summary, recs, code, answered = _run(body, str(tmp), fast=fast)
            assert code == 0
            seen.append((_rows(recs, str(tmp_path)), summary.checked, summary.records,
                         summary.by_operation, summary.stored_events, summary.dropped))
    finally:
        writer_mod.Writer.put_run = put_run    # type: ignore[method-assign]
    assert seen[0] == seen[1]
    rows = seen[0][0]
    assert [(r[2], r[6]) for r in rows] == [(str(a), 700 + 150), (str(b), 50 + 600)], rows
    # the compiled loop did report runs, each one record for many calls. How many of the
    # 1,500 calls it takes before its cache has each key depends on the machine's timing
    # (890-966 in runs on one 2-core machine, over 1,000 on another): the bound asks for
    # runs, not for a speed
    assert runs and max(runs) > 1 and sum(runs) >= 500, runs

"""`sandbox.latch.Latch`: the one-shot event the monitor host keeps per run.

It replaced `threading.Event` in three places for memory (issue 14); what must
hold is Event's behaviour as they use it: no waiter passes before `set`, every
waiter passes after it, a wait that times out says so, and `set` from several
threads at once neither raises nor lets anyone through twice too early.
"""
from __future__ import annotations

import sys
import threading
import time

from sandbox.latch import Latch


def test_no_waiter_passes_before_set_and_every_waiter_after():
    latch = Latch()
    assert not latch.is_set()
    assert latch.wait(0) is False
    assert latch.wait(0.05) is False
    passed: list[bool] = []
    waiters = [threading.Thread(target=lambda: passed.append(latch.wait(10)))
               for _ in range(16)]
    for t in waiters:
        t.start()
    time.sleep(0.05)
    assert passed == []                 # all still waiting
    latch.set()
    for t in waiters:
        t.join(10)
    assert passed == [True] * 16
    assert latch.is_set() and latch.wait() and latch.wait(0)


def test_racing_sets_never_raise_and_the_latch_stays_open():
    for _ in range(50):
        latch = Latch()
        errors: list[BaseException] = []
        start = threading.Barrier(8)

        def setter() -> None:
            start.wait()
            try:
                latch.set()
            except BaseException as exc:    # a second release of the lock would raise
                errors.append(exc)
        threads = [threading.Thread(target=setter) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert errors == []
        assert latch.wait(0) and latch.wait(0)   # a waiter gives the lock straight back


def test_a_latch_is_much_smaller_than_the_event_it_replaced():
    """Each run's host state holds three (issue 14: <= 64 KiB per run)."""
    def size(obj: object) -> int:
        seen, todo, total = set(), [obj], 0
        while todo:
            o = todo.pop()
            if id(o) in seen or isinstance(o, type):
                continue
            seen.add(id(o))
            total += sys.getsizeof(o)
            todo.extend(getattr(o, "__dict__", {}).values())
            todo.extend(getattr(o, s) for s in getattr(type(o), "__slots__", ())
                        if hasattr(o, s))
            if isinstance(o, (list, tuple, set)) or type(o).__name__ == "deque":
                todo.extend(o)
        return total
    assert size(Latch()) * 5 < size(threading.Event())

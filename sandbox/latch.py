"""A one-shot event: set once, waited for by any thread. A `threading.Event` in 100 bytes.

WHY: the monitor host keeps a few such flags per live run (a store opened, a
hub that forgot a run, a stdio hub closed). A `threading.Event` is a
Condition with its own lock, a deque of waiters and two instance dicts:
~1.2 KiB each, ~3.7 KiB per live run for three of them (issue 14 caps the
host's growth at 64 KiB per run). A latch is one lock, held from creation
and released by `set`: a waiter takes it and gives it straight back, so any
number of waiters pass once it is set, and none before. It cannot be
cleared, which none of them needs.
"""
from __future__ import annotations

import threading

_SETTING = threading.Lock()   # makes `set` once-only when two threads race to it


class Latch:
    __slots__ = ("_lock", "_set")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        with _SETTING:
            if self._set:
                return
            self._set = True
        self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        """True once set; False if `timeout` seconds passed first."""
        if self._set:
            return True
        if self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            self._lock.release()
            return True
        return self._set

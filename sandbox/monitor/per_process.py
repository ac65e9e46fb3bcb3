"""One object per process, made at first use and forgotten in a forked child.

The monitor host's shared threads (the notification hub, the audit writer pool,
the stdio relay hub) each exist once per process. A fork copies the object but
not its thread: the child must not use the parent's (its thread is gone, and
its epoll set and wake-up descriptors are the parent's too). So the child
forgets it, closing its copies of the object's descriptors (`forget`), and
makes its own at first use. The lock is made anew in the child: the parent's
may have been held by another thread at the fork.
"""
from __future__ import annotations

import os
import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class PerProcess(Generic[T]):
    def __init__(self, make: Callable[[], T],
                 forget: Callable[[T], None] | None = None) -> None:
        self._make, self._forget = make, forget
        self._obj: T | None = None
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._in_child)

    def get(self) -> T:
        """This process's object (made now if it has none yet)."""
        with self._lock:
            if self._obj is None:
                self._obj = self._make()
            return self._obj

    def _in_child(self) -> None:
        old, self._obj, self._lock = self._obj, None, threading.Lock()
        if old is not None and self._forget is not None:
            self._forget(old)

"""Message handlers: per type or wildcard, with ids, scoped to a launcher or one run.

A handler that raises is recorded in the RunResult (`handler_errors`) and the
run goes on: a bug in the caller's callback must not kill a sandbox or stop
the IPC reader.
"""
from __future__ import annotations

import itertools
import threading
import traceback
from typing import Any, Callable

from sandbox.ipc.frames import Message
from sandbox.launcher.records import add_record

Handler = Callable[[Message, "RunInfo"], Any]
WILDCARD = "*"


class RunInfo:
    """What a handler may want to know about the run the message came from."""

    def __init__(self, run_id: str, depth: int = 0) -> None:
        self.run_id = run_id
        self.depth = depth


class HandlerSet:
    _ids = itertools.count(1)

    def __init__(self) -> None:
        self._by_type: dict[str, dict[int, Handler]] = {}
        self._lock = threading.Lock()
        # (registered type -> its handlers and the wildcard's, the wildcard's alone),
        # rebuilt whole on change and swapped in one assignment: the IPC reader looks
        # this up for every message, so it must not take the lock. Only registered
        # types are keys: a cache filled per message type kept every name a child
        # chose for the launcher's life (4 runs of 30 distinct 1 MB names: +120 MB
        # after the runs; tests/test_handler_cache.py).
        self._table: tuple[dict[str, tuple[tuple[int, Handler], ...]],
                           tuple[tuple[int, Handler], ...]] = ({}, ())

    def add(self, type_: str, handler: Handler) -> int:
        hid = next(self._ids)
        with self._lock:
            self._by_type.setdefault(type_, {})[hid] = handler
            self._rebuild()
        return hid

    def remove(self, handler_id: int) -> bool:
        with self._lock:
            for handlers in self._by_type.values():
                if handlers.pop(handler_id, None) is not None:
                    self._rebuild()
                    return True
        return False

    def _rebuild(self) -> None:
        """(under the lock) The lookup table for the handlers registered now."""
        wild = tuple(self._by_type.get(WILDCARD, {}).items())
        self._table = ({t: (*h.items(), *wild) for t, h in self._by_type.items()
                        if t != WILDCARD and h}, wild)

    def matching(self, type_: str) -> tuple[tuple[int, Handler], ...]:
        by_type, wild = self._table  # one read: a concurrent add swaps in a new table
        return by_type.get(type_, wild)

    def __len__(self) -> int:
        return sum(len(h) for h in self._by_type.values())


def dispatch(sets: list[HandlerSet], msg: Message, info: RunInfo,
             errors: list[dict[str, Any]]) -> None:
    for hs in sets:
        for hid, handler in hs.matching(msg.type):
            try:
                handler(msg, info)
            except Exception as exc:
                add_record(errors, lambda: {
                    "handler_id": hid, "message_type": msg.type, "type": type(exc).__name__,
                    "message": str(exc), "traceback": traceback.format_exc()})

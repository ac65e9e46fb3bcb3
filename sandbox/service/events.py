"""Run events: numbered per run, stored, and fanned out to live listeners.

An event is (seq, type, data). Types: queued, started, stdout, stderr,
message (an IPC message), log, denied (an audit denial), truncated, refused
(a scale-out report the server refused), exit, status (on
the global stream). Workers publish from their threads; listeners are
asyncio queues on the server's loop, fed with call_soon_threadsafe. Every
event is stored before it is published, so a listener that reconnects with
Last-Event-ID reads what it missed from the store, then live ones.

Everything in `data` that came from a run is data: JSON-encoded in the SSE
`data:` field, never a header, markup or a path on the server.
"""
from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any

from sandbox.service.store import Store

QUEUE_BOUND = 10000   # events a slow listener may lag behind before it is cut off


@dataclass(frozen=True)
class Event:
    run_id: str
    seq: int
    type: str
    data: dict[str, Any]
    at: float


class Bus:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._seq: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._run_subs: dict[str, set[asyncio.Queue[Event | None]]] = {}
        self._all_subs: set[asyncio.Queue[Event | None]] = set()
        self._global = itertools.count(1)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    # -- producers (any thread) -----------------------------------------------
    def publish(self, run_id: str, type_: str, data: dict[str, Any],
                persist: bool = True) -> Event:
        with self._lock:
            seq = self._seq.get(run_id)
            if seq is None:
                seq = self.store.last_event_seq(run_id)
            seq += 1
            self._seq[run_id] = seq
            ev = Event(run_id, seq, type_, data, time.time())
            if persist:
                self.store.add_event(run_id, seq, type_, data, ev.at)
        self._fan_out(ev)
        return ev

    def forget(self, run_id: str) -> None:
        """The run ended: its counter is no longer needed in memory."""
        with self._lock:
            self._seq.pop(run_id, None)

    def _fan_out(self, ev: Event) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._deliver, ev)
        except RuntimeError:   # loop closing
            pass

    def _deliver(self, ev: Event) -> None:
        for q in list(self._run_subs.get(ev.run_id, ())):
            self._put(q, ev)
        if ev.type in ("queued", "started", "exit"):
            for q in list(self._all_subs):
                self._put(q, ev)

    @staticmethod
    def _put(q: "asyncio.Queue[Event | None]", ev: Event | None) -> None:
        try:
            q.put_nowait(ev)
        except asyncio.QueueFull:
            # a listener this far behind is cut off; it may resume with Last-Event-ID
            while not q.empty():
                q.get_nowait()
            q.put_nowait(None)

    def close(self, q: "asyncio.Queue[Event | None]") -> None:
        """End one listener's stream (from any thread): it reads None, as a
        listener cut off for lagging does (a revoked token's streams)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._put, q, None)
        except RuntimeError:   # loop closing
            pass

    # -- listeners (the loop's thread) ----------------------------------------
    def subscribe(self, run_id: str | None) -> "asyncio.Queue[Event | None]":
        q: asyncio.Queue[Event | None] = asyncio.Queue(QUEUE_BOUND)
        if run_id is None:
            self._all_subs.add(q)
        else:
            self._run_subs.setdefault(run_id, set()).add(q)
        return q

    def unsubscribe(self, run_id: str | None, q: "asyncio.Queue[Event | None]") -> None:
        if run_id is None:
            self._all_subs.discard(q)
            return
        subs = self._run_subs.get(run_id)
        if subs is not None:
            subs.discard(q)
            if not subs:
                self._run_subs.pop(run_id, None)

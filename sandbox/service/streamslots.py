"""How many requests one token may hold open: event streams and long polls.

An event stream (`GET /v1/runs/{id}/events`, `GET /v1/events`, the web page's,
which go through them) and a long poll (`?wait=` on a run) hold a connection, a
task and a subscription on the event bus for as long as their client likes. The
server has one descriptor table for every tenant, its store and its sandboxes:
before this bound one tenant held 500 streams and could hold them all (attack
probe 2026-12-07). A tenant token holds at most MAX_STREAMS at once; the next is
refused with 429 before anything is subscribed (an EventSource stops on it, it
does not retry in a loop). The admin token is trusted and not counted.

A slot is given back when its request ends, however it ends: a stream's slot is
released by the stream's `finally`, and, should the stream never start (its
client left before the first byte), when the generator holding it is collected.
"""
from __future__ import annotations

import threading
from typing import Any

from sandbox.service.runs import QuotaExceeded

MAX_STREAMS = 32


class Slot:
    """One held slot; `release` is idempotent and also runs when the slot is
    collected, so a stream that never started does not keep it."""

    def __init__(self, owner: "StreamSlots | None", token_id: str) -> None:
        self._owner, self._token_id = owner, token_id

    def release(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner._give_back(self._token_id)

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> "Slot":
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.release()


class StreamSlots:
    """Open streams and long polls by token id (one per server)."""

    def __init__(self, limit: int = MAX_STREAMS) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}

    def take(self, token: Any) -> Slot:
        """A slot for one more open request of `token`; QuotaExceeded (429) when it
        holds `limit` already."""
        if token.admin:
            return Slot(None, token.id)
        with self._lock:
            held = self._held.get(token.id, 0)
            if held >= self.limit:
                raise QuotaExceeded(f"token {token.name!r} has {self.limit} event streams "
                                    "and waits open, its limit: close one first")
            self._held[token.id] = held + 1
        return Slot(self, token.id)

    def held(self, token_id: str) -> int:
        with self._lock:
            return self._held.get(token_id, 0)

    def _give_back(self, token_id: str) -> None:
        with self._lock:
            left = self._held.get(token_id, 0) - 1
            if left > 0:
                self._held[token_id] = left
            else:
                self._held.pop(token_id, None)

"""What one token may hold open or in flight: event streams, long polls, downloads,
and answers over a megabyte.

An event stream (`GET /v1/runs/{id}/events`, `GET /v1/events`, the web page's,
which go through them) and a long poll (`?wait=` on a run) hold a connection, a
task and a subscription on the event bus for as long as their client likes. The
server has one descriptor table for every tenant, its store and its sandboxes:
before this bound one tenant held 500 streams and could hold them all (attack
probe 2026-12-07). A tenant token holds at most MAX_STREAMS at once; the next is
refused with 429 before anything is subscribed (an EventSource stops on it, it
does not retry in a loop). The admin token is trusted and not counted.

A download of an output file holds a descriptor the same way and takes the same
slots. An answer of over LARGE_BODY bytes (a run's result with its 16 MiB of
stdout and of stderr, a long audit) is held whole in memory until its client has
read it: 20 requests for one such run whose client never read took the server
from 474 MiB to 1.36 GB (probe 2026-12-07). A tenant token has at most MAX_LARGE
of those in flight, and makes at most MAX_LARGE answers at once (`large_json`);
the next waits, holding only its connection (a 429 would make a client that
submitted with `?wait=` submit again).

A slot is given back when its request ends, however it ends: a stream's slot is
released by the stream's `finally`, a large answer's once it is sent, and, should
either never start (its client left before the first byte), when what holds it
is collected.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import OrderedDict
from typing import Any, Callable, TypeVar

from fastapi.responses import JSONResponse, Response
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from sandbox.service.runs import QuotaExceeded

MAX_STREAMS = 32
MAX_LARGE = 4             # answers over LARGE_BODY in flight, per tenant token
LARGE_BODY = 1 << 20
CHUNK = 256 * 1024        # bytes of an answer sent at a time
KNOWN_LARGE = 10000       # keys of answers known to be large, kept
WAIT_POLL = 0.05          # seconds between looks for a free large slot


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
        owner, self._owner = self._owner, None
        if owner is not None:
            owner._later.append(self._token_id)

    def __enter__(self) -> "Slot":
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.release()


class StreamSlots:
    """Open streams and long polls by token id (one per server)."""

    def __init__(self, limit: int = MAX_STREAMS,
                 what: str = "event streams, waits and downloads") -> None:
        self.limit, self.what = limit, what
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}
        # slots given back by the collector (Slot.__del__): it may run at any
        # allocation, this lock held or not, so it only appends here (atomic)
        self._later: list[str] = []
        self._large: OrderedDict[str, None] = OrderedDict()

    def take(self, token: Any) -> Slot:
        """A slot for one more open request of `token`; QuotaExceeded (429) when it
        holds `limit` already."""
        slot = self.try_take(token)
        if slot is None:
            raise QuotaExceeded(f"token {token.name!r} has {self.limit} {self.what} "
                                "open, its limit: finish one first")
        return slot

    def try_take(self, token: Any) -> Slot | None:
        """A slot, or None when `token` holds `limit` already (an admin's: always)."""
        if token.admin:
            return Slot(None, token.id)
        with self._lock:
            self._collected()
            held = self._held.get(token.id, 0)
            if held >= self.limit:
                return None
            self._held[token.id] = held + 1
        return Slot(self, token.id)

    async def wait_take(self, token: Any) -> Slot:
        """A slot, once one is free (polled: a slot is given back from any thread)."""
        while True:
            slot = self.try_take(token)
            if slot is not None:
                return slot
            await asyncio.sleep(WAIT_POLL)

    def known_large(self, key: str) -> bool:
        with self._lock:
            return key in self._large

    def remember_large(self, key: str) -> None:
        """`key`'s answer is over LARGE_BODY (the last KNOWN_LARGE keys are kept)."""
        with self._lock:
            self._large[key] = None
            self._large.move_to_end(key)
            while len(self._large) > KNOWN_LARGE:
                self._large.popitem(last=False)

    def held(self, token_id: str) -> int:
        with self._lock:
            self._collected()
            return self._held.get(token_id, 0)

    def _give_back(self, token_id: str) -> None:
        with self._lock:
            self._one_less(token_id)

    def _collected(self) -> None:
        """Apply the slots the collector gave back (the lock held)."""
        while self._later:
            self._one_less(self._later.pop())

    def _one_less(self, token_id: str) -> None:
        left = self._held.get(token_id, 0) - 1
        if left > 0:
            self._held[token_id] = left
        else:
            self._held.pop(token_id, None)


class Paced(Response):
    """An answer sent a CHUNK at a time: the server's next send waits until the
    client has taken the last (uvicorn's flow control), so the answer's slot is held
    until its client has read it. Sent whole, the body went into the connection's
    buffer at once, and its slot came back while the server still held all of it."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        body = memoryview(self.body)
        for at in range(0, max(len(body), 1), CHUNK):
            await send({"type": "http.response.body", "body": bytes(body[at:at + CHUNK]),
                        "more_body": at + CHUNK < len(body)})
        if self.background is not None:
            await self.background()


class PacedJSON(Paced, JSONResponse):
    """A JSON answer, paced."""


P = TypeVar("P", bound=Paced)


async def making(svc: Any, token: Any, held: bool = False) -> Slot:
    """One of the token's `svc.building` slots, waited for: what a request makes in
    memory (a submission read and decoded, about three times its body; an answer)
    is made at most MAX_LARGE at a time per token."""
    return svc.building.try_take(token) or await _waiting(svc, token, svc.building, held)


async def _waiting(svc: Any, token: Any, slots: StreamSlots, held: bool) -> Slot:
    """A slot of `slots`, waited for; the wait holds one of the token's stream slots
    (a connection held), unless the caller holds one already."""
    with contextlib.nullcontext() if held else svc.streams.take(token):
        return await slots.wait_take(token)


async def large_json(svc: Any, token: Any, build: Callable[[], Any], *, key: str | None = None,
                     held: bool = False, status_code: int = 200,
                     headers: dict[str, str] | None = None) -> PacedJSON:
    """The JSON answer of `build()`, as `large_answer` makes and holds it."""
    return await large_answer(svc, token, lambda: PacedJSON(build(), status_code=status_code,
                                                            headers=headers),
                              key=key, held=held)


async def large_answer(svc: Any, token: Any, make: Callable[[], P], *,
                       key: str | None = None, held: bool = False) -> P:
    """The answer `make()` makes, in a worker thread while holding one of the
    token's `svc.building` slots (at most MAX_LARGE made at once). One of over
    LARGE_BODY bytes holds one of its `svc.large` slots until its client has read
    it; when none is free, the answer is dropped, and made again once one is. An
    answer known to be large (by `key`, e.g. a run's id: a result does not shrink)
    waits for its slot before it is made. A request that waits holds no more than
    its connection (one of `svc.streams`, unless `held`: the caller holds one), so
    a token whose readers do not read makes only its own large answers wait."""
    large: Slot | None = None
    try:
        while True:
            if large is None and key is not None and svc.large.known_large(key):
                large = svc.large.try_take(token) or await _waiting(svc, token, svc.large,
                                                                     held)
            building = await making(svc, token, held)
            try:
                if large is None and key is not None and svc.large.known_large(key):
                    continue            # learnt while it waited: its large slot first
                response = await run_in_threadpool(make)
            finally:
                building.release()
            if len(response.body) <= LARGE_BODY:
                return response
            if key is not None:
                svc.large.remember_large(key)
            large = large or svc.large.try_take(token)
            if large is None:
                del response            # not held while it waits
                continue
            response.background = BackgroundTask(large.release)
            large = None                # the answer gives it back once sent
            return response
    finally:
        if large is not None:
            large.release()

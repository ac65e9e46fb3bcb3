"""Server-Sent Events: one run's events (resumable), and every visible run's status.

`id:` is the run's event number, so `Last-Event-ID` (or `?after=`) resumes
exactly after the last event a client saw; a finished run's stream replays
its stored events and ends after `exit`. Lines end with LF only, and
`data:` is always one JSON object (ASCII: control characters escaped):
whatever a run printed is inside a JSON string, never raw SSE text (a
newline in stdout cannot start a forged event).
"""
from __future__ import annotations

import json
from typing import Annotated, Any, AsyncIterator

from fastapi import APIRouter, Depends, Header, Query
from sse_starlette.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from sandbox.service.deps import Service, current_token, service
from sandbox.service.events import Event
from sandbox.service.routes_runs import visible_run
from sandbox.service.store import MAX_SEQ, TokenRow, seq_of

router = APIRouter()
Tok = Annotated[TokenRow, Depends(current_token)]
Svc = Annotated[Service, Depends(service)]
PING = 15
PAGE = 256          # stored events read at a time


def _sse(seq: int | str, type_: str, data: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(data, separators=(",", ":")), event=type_,
                           id=str(seq), sep="\n")


def _after(last_event_id: str | None, after: int | None) -> int:
    """Where a stream starts: ?after=, else Last-Event-ID, else the start (an id
    this server could not have given, too)."""
    if after is not None:
        return after
    return seq_of(last_event_id) or 0


@router.get("/v1/runs/{run_id}/events", response_class=EventSourceResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def run_events(run_id: str, tok: Tok, svc: Svc,
                     after: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
                     last_event_id: Annotated[str | None, Header(max_length=32)] = None
                     ) -> EventSourceResponse:
    """The run's events from after `Last-Event-ID` (or ?after=N), stored then live;
    the stream ends after the `exit` event."""
    await run_in_threadpool(visible_run, svc, tok, run_id)
    start = _after(last_event_id, after)
    slot = svc.streams.take(tok)     # 429 over the token's open streams (streamslots.py)

    async def stored(after: int, upto: int | None = None
                     ) -> AsyncIterator[tuple[int, str, dict[str, Any]]]:
        """The stored events after `after` (up to `upto`), read a page at a time: a
        reader holds one page, never the whole run (a run's events may be tens of
        MiB, and each reconnect replays them)."""
        while True:
            page = await run_in_threadpool(svc.store.events, run_id, after, PAGE)
            for seq, type_, data, _at in page:
                if upto is not None and seq > upto:
                    return
                yield seq, type_, data
                after = seq
            if len(page) < PAGE:
                return

    async def stream() -> AsyncIterator[ServerSentEvent]:
        q = svc.bus.subscribe(run_id)
        last = start
        try:
            if not svc.revocations.watch(tok.id, q):   # revoked: the stream closes
                return
            async for seq, type_, data in stored(last):
                yield _sse(seq, type_, data)
                last = seq
                if type_ == "exit":
                    return
            while True:
                ev: Event | None = await q.get()
                if ev is None:      # this listener fell too far behind: the client resumes
                    return
                if ev.seq <= last:
                    continue
                if ev.seq > last + 1:   # delivered out of order: fill from the store
                    async for seq, type_, data in stored(last, upto=ev.seq):
                        yield _sse(seq, type_, data)
                        last = seq
                        if type_ == "exit":
                            return
                    if ev.seq <= last:
                        continue
                yield _sse(ev.seq, ev.type, ev.data)
                last = ev.seq
                if ev.type == "exit":
                    return
        finally:
            slot.release()
            svc.revocations.unwatch(tok.id, q)
            svc.bus.unsubscribe(run_id, q)

    return EventSourceResponse(stream(), ping=PING, sep="\n")


@router.get("/v1/events", response_class=EventSourceResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def all_events(tok: Tok, svc: Svc) -> EventSourceResponse:
    """Live status changes (queued, started, exit) of every run this token can see;
    `data` holds `run_id` too. `id:` is RUN_ID:SEQ (no replay: list with GET /v1/runs)."""
    owners: dict[str, str | None] = {}
    slot = svc.streams.take(tok)     # 429 over the token's open streams (streamslots.py)

    async def stream() -> AsyncIterator[ServerSentEvent]:
        q = svc.bus.subscribe(None)
        try:
            if not svc.revocations.watch(tok.id, q):   # revoked: the stream closes
                return
            while True:
                ev = await q.get()
                if ev is None:
                    return
                if not tok.admin:
                    owner = owners.get(ev.run_id)
                    if owner is None:
                        # its owner only: a whole row is its request and its result
                        head = await run_in_threadpool(svc.store.run_head, ev.run_id)
                        owner = head.token_id if head is not None else ""
                        if len(owners) > 10000:
                            owners.clear()
                        owners[ev.run_id] = owner
                    if owner != tok.id:
                        continue
                yield _sse(f"{ev.run_id}:{ev.seq}", ev.type, {"run_id": ev.run_id, **ev.data})
        finally:
            slot.release()
            svc.revocations.unwatch(tok.id, q)
            svc.bus.unsubscribe(None, q)

    return EventSourceResponse(stream(), ping=PING, sep="\n")

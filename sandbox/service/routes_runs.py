"""/v1/runs: submit, list, get, cancel; /healthz."""
from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

import sandbox
from sandbox.service import tenancy
from sandbox.service.deps import NotFound, Service, current_token, service
from sandbox.service.models import FINAL_STATES, Health, RunList, RunRequest, RunView
from sandbox.service.runs import view
from sandbox.service.store import RunHead, RunRow, TokenRow, seq_of
from sandbox.service.streamslots import large_json, making

router = APIRouter()
MAX_WAIT = 300.0
Tok = Annotated[TokenRow, Depends(current_token)]
Svc = Annotated[Service, Depends(service)]


def visible_run(svc: Service, tok: TokenRow, run_id: str) -> RunHead:
    """The run's head if this token may see it; 404 otherwise (another tenant's run
    does not exist, as far as this token can tell). The head only: the whole row
    holds the run's result, and every request about a run (one 4-byte file of it,
    its events) read and decoded its 40 MB of output to check who owns it."""
    row = svc.store.run_head(run_id) if len(run_id) <= 64 else None
    if row is None or (not tok.admin and row.token_id != tok.id):
        raise NotFound(f"no run {run_id[:64]!r}")
    return row


async def wait_final(svc: Service, run_id: str, seconds: float) -> bool:
    """Whether the run has ended, waiting up to `seconds` for it. Its head is read, not
    its row (the answer reads the row once, after), and not again after its `exit`
    event: every writer of that event has made the run final in the store first. Each
    read is a trip through the thread pool, on the path of every `?wait=` answer."""
    q = svc.bus.subscribe(run_id)
    try:
        head = await run_in_threadpool(svc.store.run_head, run_id)
        if head is None or _final(head) or seconds <= 0:
            return _final(head)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                ev = await asyncio.wait_for(q.get(), left)
            except (asyncio.TimeoutError, TimeoutError):
                break
            if ev is None:
                break           # cut off as a slow listener: the store says
            if ev.type == "exit":
                return True
    finally:
        svc.bus.unsubscribe(run_id, q)
    return _final(await run_in_threadpool(svc.store.run_head, run_id))


def _final(head: RunHead | None) -> bool:
    return head is not None and head.status in FINAL_STATES


def _body_doc() -> dict:
    schema = {"$ref": "#/components/schemas/RunRequest"}   # added by app.openapi()
    multipart = {"type": "object", "required": ["request"], "properties": {
        "request": {"type": "string", "description": "the RunRequest as JSON"},
        "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                  "description": "input files; each part's filename is its name in the "
                  "input directory"}}}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": schema},
        "multipart/form-data": {"schema": multipart}}}}


async def read_request(request: Request, svc: Service) -> tuple[RunRequest,
                                                                 list[tuple[str, bytes, bool]]]:
    """The RunRequest of a JSON body, or of a multipart body's `request` part with
    its `files` parts as uploads. 422 naming the field for anything invalid."""
    from fastapi.exceptions import RequestValidationError
    from pydantic import ValidationError
    from starlette.datastructures import UploadFile
    from sandbox.errors import InputError
    from sandbox.service.files import check_input_name
    from sandbox.service.models import MAX_FILES
    uploads: list[tuple[str, bytes, bool]] = []
    ctype = request.headers.get("content-type", "")
    try:
        if ctype.startswith("multipart/form-data"):
            form = await request.form(max_files=MAX_FILES, max_fields=16,
                                      max_part_size=svc.config.max_body)
            raw_req = form.get("request")
            if not isinstance(raw_req, str):
                raise InputError("request: the multipart body needs a 'request' part "
                                 "holding the RunRequest as JSON")
            raw = json.loads(raw_req)
            for key, value in form.multi_items():
                if key == "request":
                    continue
                if key != "files" or not isinstance(value, UploadFile):
                    raise InputError(f"{key[:64]!r}: a multipart body has 'request' and "
                                     "'files' parts only")
                try:
                    name = check_input_name(value.filename or "")
                except ValueError as exc:
                    raise InputError(f"files[{(value.filename or '')[:200]!r}]: {exc}") \
                        from None
                data = await value.read(svc.config.max_file + 1)
                if len(data) > svc.config.max_file:
                    raise InputError(f"files[{name}]: over the {svc.config.max_file}-byte "
                                     "limit per file")
                uploads.append((name, data, False))
        else:
            raw = await request.json()
    except json.JSONDecodeError as exc:
        raise InputError(f"body: not valid JSON ({exc.msg} at {exc.pos})") from None
    except UnicodeDecodeError:
        raise InputError("body: not UTF-8 JSON") from None
    try:
        return RunRequest.model_validate(raw), uploads
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors(
                include_url=False, include_context=False)]) from None


@router.post("/v1/runs", status_code=202, response_model=RunView,
             openapi_extra=_body_doc(),
             responses={200: {"model": RunView, "description": "finished within ?wait="},
                        401: {}, 403: {}, 413: {}, 422: {}, 429: {}})
async def submit(request: Request, tok: Tok, svc: Svc,
                 wait: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 0,
                 idempotency_key: Annotated[str | None, Header(max_length=200)] = None
                 ) -> JSONResponse:
    """Queue a program or workflow run (a JSON RunRequest, or multipart: a `request`
    part and `files` parts). 202 with the run and its links; with ?wait=SECONDS,
    200 and the finished run when it ends in time."""
    svc.rate_check(tok)
    # a wait holds a connection: its slot is taken before a run is made (429: none made)
    slot = svc.streams.take(tok) if wait > 0 else None
    try:
        # read, decoded and written a few at a time: a 60 MiB body costs ~190 MiB while
        # it is, and eight at once from one tenant took the server to 1.34 GB
        with await making(svc, tok, held=slot is not None):
            req, uploads = await read_request(request, svc)
            tenancy.check_queue(tok.queues, tok.name, req.labels)
            row, created = await run_in_threadpool(_submit, svc, req, tok, idempotency_key,
                                                   uploads)
            del req, uploads
        if created:
            svc.queue.submitted(row.id)
        done = wait > 0 and await wait_final(svc, row.id, wait)
        run_id = row.id
        del row         # a large answer may wait for a slot: the row is read again then
        return await large_json(svc, tok, lambda: _answer(svc, tok, run_id),
                                key=run_id, held=slot is not None, status_code=200 if done else 202,
                                headers={"Location": f"/v1/runs/{run_id}"})
    finally:
        if slot is not None:
            slot.release()


def _submit(svc: Service, req: RunRequest, tok: TokenRow, idempotency_key: str | None,
            uploads: list[tuple[str, bytes, bool]]) -> tuple[RunRow, bool]:
    """The queue's label check (a broker's may ask Redis) and the submit, in one trip
    through the thread pool."""
    svc.queue.check_labels(req.labels)
    return svc.runs.submit(req, tok, idempotency_key, uploads, svc.queue.hold_secrets)


def _answer(svc: Service, tok: TokenRow, run_id: str) -> object:
    """A run's view as JSON data (its row read now)."""
    row = svc.store.run(run_id)
    if row is None:     # removed by retention meanwhile
        raise NotFound(f"no run {run_id[:64]!r}")
    return view(row, tok.name if row.token_id == tok.id
                else svc.token_name(row.token_id)).model_dump(mode="json")


@router.get("/v1/runs", response_model=RunList)
def list_runs(tok: Tok, svc: Svc,
              status: Annotated[str | None, Query(max_length=32)] = None,
              token: Annotated[str | None, Query(max_length=64,
                                                 description="a token's name (admin)")] = None,
              since: float | None = None, until: float | None = None,
              cursor: Annotated[str | None, Query(max_length=32)] = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50) -> RunList:
    """Runs this token can see, newest first; ?cursor= continues a listing. Each
    result leaves out stdout, stderr, logs and store: GET /v1/runs/{id} has them."""
    from sandbox.errors import InputError
    after = None
    if cursor is not None:
        after = seq_of(cursor)
        if after is None:
            raise InputError("cursor: not a cursor this server gave")
    token_ids: list[str | None] = [tok.id]
    if tok.admin:
        token_ids = [None] if token is None else \
            [t.id for t in svc.store.tokens() if t.name == token] or ["-"]
    rows: list[RunRow] = []
    for tid in token_ids:
        rows += svc.store.list_runs(token_id=tid, status=status, since=since, until=until,
                                    after_seq=after, limit=limit, brief=True)
    rows.sort(key=lambda r: r.seq, reverse=True)
    rows = rows[:limit]
    names: dict[str, str] = {}
    items = []
    for r in rows:
        if r.token_id not in names:
            names[r.token_id] = svc.token_name(r.token_id)
        items.append(view(r, names[r.token_id]))
    nxt = str(rows[-1].seq) if len(rows) == limit else None
    return RunList(items=items, next_cursor=nxt)


@router.get("/v1/runs/{run_id}", response_model=RunView)
async def get_run(run_id: str, tok: Tok, svc: Svc,
                  wait: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 0) -> JSONResponse:
    """One run: its status, times, attempts and (once ended) its RunResult.
    ?wait=SECONDS waits for it to end first."""
    row = await run_in_threadpool(visible_run, svc, tok, run_id)
    if wait > 0 and row.status not in FINAL_STATES:
        with svc.streams.take(tok):     # a wait holds a connection (streamslots.py)
            await wait_final(svc, run_id, wait)
    del row
    # a result may be 40 MB of JSON, held until its client reads it (streamslots.py)
    return await large_json(svc, tok, lambda: _answer(svc, tok, run_id), key=run_id)


@router.post("/v1/runs/{run_id}/cancel", response_model=RunView, status_code=202)
async def cancel(run_id: str, tok: Tok, svc: Svc) -> JSONResponse:
    """Cancel a queued run (it never starts) or kill a running one. 202; a run
    that already ended is returned as it is (409 is not used: cancel is idempotent)."""
    head = await run_in_threadpool(visible_run, svc, tok, run_id)
    if head.status not in FINAL_STATES:
        await run_in_threadpool(svc.queue.cancel, run_id)
    return await large_json(svc, tok, lambda: _answer(svc, tok, run_id), key=run_id,
                            status_code=202)


@router.get("/healthz", response_model=Health)
def healthz(svc: Svc) -> Health:
    """Liveness: no token needed; says nothing about any run."""
    return Health(status="ok", version=sandbox.__version__, queued=svc.store.count("queued"),
                  running=svc.queue.running_count())

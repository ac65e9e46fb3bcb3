"""The runs list and a run's detail page: live over the API's event streams,
with downloads of its output streams and files, cancel and re-run."""
from __future__ import annotations

import hashlib
import secrets
import tomllib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from . import views
from sandbox.service.files import from_href, href, name_of, text

from .bridge import ApiError, Stream
from .common import Ctx, api_error_page, back, current, posted, render

router = APIRouter()

STATUSES = ["queued", "running", "ok", "error", "timeout", "limit_exceeded", "signaled",
            "violation", "setup_error", "cancelled", "lost"]
FILTERS = ("status", "policy", "token", "host", "since", "until")
SHOWN_OUTPUT = 256 * 1024   # characters of stdout/stderr drawn on the page; the download has all


def _attached(filename: str) -> dict[str, str]:
    """Headers of a download: always an attachment, never rendered by the browser, with
    a name made of safe characters (the run chose the original)."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in filename)[:120] or "download"
    return {"content-disposition": f"attachment; filename=\"{safe}\"; filename*=UTF-8''{quote(safe)}",
            "x-content-type-options": "nosniff"}


def attachment(body: bytes, filename: str, media: str = "application/octet-stream") -> Response:
    return Response(body, media_type=media, headers=_attached(filename))


def _epoch(text: str) -> float | None:
    """A filter's time: epoch seconds or an ISO date/time (UTC)."""
    import datetime as dt
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


async def _runs(ctx: Ctx, query: dict[str, str]) -> tuple[list[dict[str, Any]], str | None]:
    page = await ctx.api.get("/runs", status=query.get("status"), token=query.get("token"),
                             since=_epoch(query.get("since", "")),
                             until=_epoch(query.get("until", "")),
                             cursor=query.get("cursor"), limit=50)
    items = page.get("items", [])
    # policy and host are narrowed here (the API filters by status, token, time)
    for key in ("policy", "host"):
        if query.get(key):
            items = [r for r in items if str(r.get(key) or "") == query[key]]
    return items, page.get("next_cursor")


@router.get("/runs")
async def runs_page(request: Request) -> Response:
    ctx = current(request)
    query = {k: request.query_params.get(k, "") for k in FILTERS + ("cursor",)}
    try:
        items, cursor = await _runs(ctx, query)
    except ApiError as err:
        return api_error_page(ctx, err)
    return render(ctx, request, "runs.html", runs=items, next_cursor=cursor, query=query,
                  statuses=STATUSES)


@router.get("/runs/rows")
async def runs_rows(request: Request) -> Response:
    """The table body alone, for the list's live refresh (ui.js)."""
    ctx = current(request)
    query = {k: request.query_params.get(k, "") for k in FILTERS + ("cursor",)}
    try:
        items, _ = await _runs(ctx, query)
    except ApiError as err:
        return Response(status_code=err.status)
    return render(ctx, request, "runs_rows.html", runs=items)


async def _proxy_events(ctx: Ctx, path: str, last_id: str | None) -> Response:
    headers = {"accept": "text/event-stream"}
    if last_id:
        headers["last-event-id"] = last_id[:32]
    stream: Stream = await ctx.api.stream(path, headers=headers)
    if stream.status != 200:
        await stream.close()
        return Response(status_code=stream.status)

    async def body() -> AsyncIterator[bytes]:
        async for chunk in stream.body():
            yield chunk
            if await ctx.request.is_disconnected():
                break

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})


@router.get("/events")
async def events(request: Request) -> Response:
    """The API's status stream for every run this token sees (the live list)."""
    ctx = current(request)
    return await _proxy_events(ctx, "/events", request.headers.get("last-event-id"))


@router.get("/runs/{run_id}/events")
async def run_events(request: Request, run_id: str) -> Response:
    ctx = current(request)
    return await _proxy_events(ctx, f"/runs/{quote(run_id, safe='')}/events",
                               request.headers.get("last-event-id"))


async def _run(ctx: Ctx, run_id: str) -> dict[str, Any]:
    return await ctx.api.get(f"/runs/{quote(run_id, safe='')}")


HASH_FILES = 50              # files per page whose sha256 the page computes itself
HASH_BYTES = 8 * 1024 * 1024  # and the largest one
HASH_TOTAL = 16 * 1024 * 1024  # bytes all of them together: what one view reads and hashes


def _href(f: dict[str, Any]) -> str:
    """The listing's download path of a file (a server before `href` gave only `path`)."""
    return str(f.get("href") or quote(str(f.get("path", "")), safe="/"))


async def _files(ctx: Ctx, run_id: str) -> list[dict[str, Any]]:
    """The run's output files; the sha256 of each regular file, from the
    listing when the API gives it, else computed here from the API's own
    download, streamed, within a budget: HASH_FILES files of at most HASH_BYTES,
    HASH_TOTAL bytes together, judged by the larger of a file's apparent and
    allocated size (a sparse file's holes are read as zeros: 50 files of 8 MiB
    holding 4 KiB on disk made each view read and hash 400 MiB)."""
    rid = quote(run_id, safe="")
    try:
        listing = await ctx.api.get(f"/runs/{rid}/files")
    except ApiError as err:
        if err.status == 404:
            return []
        raise
    items = listing.get("items", listing.get("files", [])) if isinstance(listing, dict) else listing
    files = [dict(f) for f in items or [] if isinstance(f, dict)]
    count, left = HASH_FILES, HASH_TOTAL
    for f in files:
        if isinstance(f.get("href"), str):     # the exact name, shown once escaped
            f["exact"] = from_href(f["href"])
        if f.get("sha256") or f.get("kind", "file") != "file":
            continue
        size, allocated = f.get("size"), f.get("allocated", 0)
        cost = max(size, allocated) if isinstance(size, int) and isinstance(allocated, int) \
            else None
        if count <= 0 or cost is None or cost > min(HASH_BYTES, left):
            f["sha256_note"] = "not computed (too large or too many files)"
            continue
        count, left = count - 1, left - cost
        digest = await _sha256(ctx, f"/runs/{rid}/files/{_href(f)}", cost)
        if digest is not None:
            f["sha256"] = digest
    return files


async def _sha256(ctx: Ctx, path: str, most: int) -> str | None:
    """The sha256 of a download, read a chunk at a time; None when it fails or
    holds more than `most` bytes (the file grew since the listing)."""
    stream = await ctx.api.stream(path)
    h, seen = hashlib.sha256(), 0
    try:
        if stream.status != 200:
            return None
        async for chunk in stream.body():
            seen += len(chunk)
            if seen > most:
                return None
            h.update(chunk)
    finally:
        await stream.close()
    return h.hexdigest()


async def _limits(ctx: Ctx, policy: str | None) -> dict[str, Any]:
    """The limits of the policy a run used, as the API shows the policy (its
    document, or its TOML text), in seconds, bytes and counts."""
    if not policy:
        return {}
    try:
        doc = await ctx.api.get(f"/policies/{quote(policy, safe='')}")
    except ApiError:
        return {}
    return views.policy_limits(doc if isinstance(doc, dict) else {})


@router.get("/runs/{run_id}")
async def run_page(request: Request, run_id: str) -> Response:
    ctx = current(request)
    try:
        run = await _run(ctx, run_id)
        files = await _files(ctx, run_id) if run.get("status") not in ("queued",) else []
        limits = await _limits(ctx, run.get("policy"))
    except ApiError as err:
        return api_error_page(ctx, err)
    result = dict(run.get("result") or {})
    clipped = []
    for name in ("stdout", "stderr"):
        text = result.get(name)
        if isinstance(text, str) and len(text) > SHOWN_OUTPUT:
            result[name] = text[:SHOWN_OUTPUT]
            clipped.append(name)
    return render(ctx, request, "run.html", run=run, result=result, files=files, clipped=clipped,
                  nonce=secrets.token_urlsafe(16),
                  bars=views.setup_bars(result.get("timings")), chart_w=views.CHART_W,
                  row_h=views.ROW_H, usage=views.usage(result, limits),
                  final=run.get("status") in views.FINAL, tab="overview")


DOWNLOADS = {"stdout.txt": "stdout", "stderr.txt": "stderr", "logs.jsonl": "logs"}


@router.get("/runs/{run_id}/download/{stream_name}")
async def download_stream(request: Request, run_id: str, stream_name: str) -> Response:
    """stdout, stderr or logs of a run, as a file: the API's own download of them,
    passed on as the browser reads it. Made here whole, 16 MiB went into each
    connection's buffer, for as many readers as asked (probe 2026-12-07)."""
    ctx = current(request)
    if stream_name not in DOWNLOADS:
        return Response(status_code=404)
    stream = await ctx.api.stream(f"/runs/{quote(run_id, safe='')}/streams/"
                                  f"{DOWNLOADS[stream_name]}")
    if stream.status >= 400:
        await stream.close()
        return Response(status_code=stream.status)
    headers = _attached(f"{run_id}-{stream_name}")
    if stream.headers.get("content-length", "").isdigit():
        headers["content-length"] = stream.headers["content-length"]
    return StreamingResponse(stream.body(), media_type="text/plain; charset=utf-8",
                             headers=headers)


@router.get("/runs/{run_id}/files/{path:path}")
async def download_file(request: Request, run_id: str, path: str) -> Response:
    ctx = current(request)
    path = name_of(request.scope.get("raw_path"), b"/files/", path)
    # streamed through, a chunk at a time: buffered, eight parallel downloads of one
    # 63 MiB file (4 KiB on disk: a hole) took the server from 114 MiB to 1.6 GiB
    stream = await ctx.api.stream(f"/runs/{quote(run_id, safe='')}/files/{href(path)}")
    if stream.status >= 400:
        await stream.close()
        return Response(status_code=stream.status)
    headers = _attached(text(path).rsplit("/", 1)[-1])
    if stream.headers.get("content-length", "").isdigit():
        headers["content-length"] = stream.headers["content-length"]
    return StreamingResponse(stream.body(), media_type="application/octet-stream",
                             headers=headers)


@router.post("/runs/{run_id}/cancel")
async def cancel(request: Request, run_id: str) -> Response:
    ctx, _ = await posted(request)
    try:
        await ctx.api.post(f"/runs/{quote(run_id, safe='')}/cancel")
    except ApiError as err:
        return api_error_page(ctx, err)
    return back(f"/runs/{quote(run_id, safe='')}")


@router.post("/runs/{run_id}/rerun")
async def rerun(request: Request, run_id: str) -> Response:
    """Submit the same program again, under the same policy or the suggested one."""
    ctx, form = await posted(request)
    try:
        run = await _run(ctx, run_id)
        if not run.get("argv"):
            return render(ctx, request, "error.html", status=400, status_code=400,
                          message="Only a program (argv) run can be re-run from the page.")
        body: dict[str, Any] = {"argv": run["argv"], "labels": {"rerun_of": run["id"]}}
        if form.get("policy") == "suggested":
            suggested = await ctx.api.get(f"/runs/{quote(run_id, safe='')}/policy/suggest")
            # the API takes an inline policy as data; it checks it like a file
            # (and against the token's ceiling) on submit
            try:
                body["policy_inline"] = tomllib.loads(str(suggested.get("toml", "")))
            except tomllib.TOMLDecodeError as err:
                return render(ctx, request, "error.html", status=502, status_code=502,
                              message=f"the suggested policy is not valid TOML: {err}")
        elif str(run.get("policy") or "").startswith("inline:"):
            return render(ctx, request, "error.html", status=400, status_code=400,
                          message="This run's policy was given inline with it: re-run it "
                                  "through the API with that policy, or with the suggested "
                                  "one.")
        elif run.get("policy"):
            body["policy"] = run["policy"]
        # A double click (or a resent form) submits once: the form carries a
        # nonce made when the page was drawn, and the API's idempotency key
        # is derived from it and the session.
        nonce = form.get("nonce", "")[:64]
        headers = {}
        if nonce:
            key = hashlib.sha256(f"{ctx.session.sid}:{run_id}:{nonce}:{form.get('policy')}"
                                 .encode()).hexdigest()
            headers["idempotency-key"] = "ui-" + key
        new = await ctx.api.call("POST", "/runs", json_body=body, headers=headers)
    except ApiError as err:
        return api_error_page(ctx, err)
    return back(f"/runs/{quote(str(new['id']), safe='')}")

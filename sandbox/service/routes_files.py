"""A run's output files: list and download, never following a link the run planted.

Downloads are `application/octet-stream` with `Content-Disposition:
attachment` (the name RFC 5987-encoded, never raw in the header) and
`X-Content-Type-Options: nosniff`: a browser never renders a run's file as
a page of the server's origin.
"""
from __future__ import annotations

import json
import os
import urllib.parse
from typing import Annotated, AsyncIterator, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from sandbox.service.deps import NotFound, Service, current_token, service
from sandbox.service.files import list_outputs, name_of, open_output, text
from sandbox.service.routes_runs import visible_run
from sandbox.service.store import TokenRow
from sandbox.service.streamslots import Paced, large_answer, large_json

router = APIRouter()
Tok = Annotated[TokenRow, Depends(current_token)]
Svc = Annotated[Service, Depends(service)]
CHUNK = 256 * 1024


class FileEntry(BaseModel):
    path: str           # as text; bytes that are not UTF-8 shown as \\xNN
    size: int           # apparent size (holes read as zeros)
    kind: str           # file, link (another name of `target`), dir, symlink, other
    href: str           # the name's bytes percent-encoded: GET .../files/{href}
    allocated: int = 0  # bytes the file holds on disk
    target: str | None = None   # for a link: the href of the file's first name


class FileList(BaseModel):
    items: list[FileEntry]


@router.get("/v1/runs/{run_id}/files", response_model=FileList)
async def list_files(run_id: str, tok: Tok, svc: Svc) -> JSONResponse:
    """Every entry of the run's output directory (links listed, never followed; a
    second name of a file listed as a `link` to the first)."""
    await run_in_threadpool(visible_run, svc, tok, run_id)

    def listing() -> object:
        return FileList(items=[FileEntry(path=f.path, size=f.size, kind=f.kind, href=f.href,
                                         allocated=f.allocated, target=f.target)
                               for f in list_outputs(svc.config.output_dir(run_id))]
                        ).model_dump(mode="json")
    # 10,000 entries of long names are tens of MB, held until read (streamslots.py)
    return await large_json(svc, tok, listing)


def _disposition(path: str) -> str:
    name = os.path.basename(path)
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in name)
    return (f'attachment; filename="{ascii_name}"; '
            f"filename*=UTF-8''{urllib.parse.quote(name, safe='')}")


@router.get("/v1/runs/{run_id}/files/{path:path}",
            responses={200: {"content": {"application/octet-stream": {}}}})
async def download(run_id: str, path: str, request: Request, tok: Tok,
                   svc: Svc) -> StreamingResponse:
    """One regular file of the run's output, named by its bytes percent-encoded (the
    listing's `href`); 404 for a link, a directory, a name that would leave the output
    directory, or a name with a control character (listed, never served: such a name
    is never near a header)."""
    await run_in_threadpool(visible_run, svc, tok, run_id)
    path = name_of(request.scope.get("raw_path"), b"/files/", path)
    # a download holds a descriptor for as long as its client reads (streamslots.py)
    slot = svc.streams.take(tok)
    try:
        fd, size = await run_in_threadpool(open_output, svc.config.output_dir(run_id), path)
    except FileNotFoundError:
        slot.release()
        raise NotFound(f"no regular file {text(path)[:200]!r} in the run's outputs") from None

    async def body() -> AsyncIterator[bytes]:
        try:
            left = size
            while left > 0:
                chunk = await run_in_threadpool(os.read, fd, min(CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                yield chunk
        finally:
            os.close(fd)
            slot.release()

    return StreamingResponse(body(), media_type="application/octet-stream", headers={
        "Content-Length": str(size), "Content-Disposition": _disposition(text(path)),
        "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
        "Content-Security-Policy": "default-src 'none'; sandbox"})


STREAM_TYPES = {"stdout": "text/plain; charset=utf-8", "stderr": "text/plain; charset=utf-8",
                "logs": "application/x-ndjson"}


@router.get("/v1/runs/{run_id}/streams/{name}",
            responses={200: {"content": {t: {} for t in set(STREAM_TYPES.values())}}})
async def run_stream(run_id: str, name: Literal["stdout", "stderr", "logs"], tok: Tok,
                     svc: Svc) -> Paced:
    """The run's stdout or stderr (UTF-8 text) or its log records (JSON lines), as
    the result holds them, as a download (an attachment, never rendered): what the
    web page's downloads of them are. Sent as the client reads it, like every large
    answer (at most 4 of a token's in flight)."""
    await run_in_threadpool(visible_run, svc, tok, run_id)

    def make() -> Paced:
        row = svc.store.run(run_id)
        if row is None:     # removed by retention meanwhile
            raise NotFound(f"no run {run_id[:64]!r}")
        result = row.result or {}
        if name == "logs":
            text_ = "".join(json.dumps(rec) + "\n" for rec in result.get("logs") or [])
        else:
            text_ = str(result.get(name) or "")
        return Paced(text_.encode("utf-8", "surrogateescape"), media_type=STREAM_TYPES[name],
                     headers={"Content-Disposition": _disposition(f"{run_id}-{name}"),
                              "X-Content-Type-Options": "nosniff",
                              "Cache-Control": "no-store",
                              "Content-Security-Policy": "default-src 'none'; sandbox"})
    return await large_answer(svc, tok, make, key=f"{run_id}/{name}")

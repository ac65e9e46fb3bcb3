"""A run's output files: list and download, never following a link the run planted.

Downloads are `application/octet-stream` with `Content-Disposition:
attachment` (the name RFC 5987-encoded, never raw in the header) and
`X-Content-Type-Options: nosniff`: a browser never renders a run's file as
a page of the server's origin.
"""
from __future__ import annotations

import os
import urllib.parse
from typing import Annotated, AsyncIterator

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from sandbox.service.deps import NotFound, Service, current_token, service
from sandbox.service.files import list_outputs, open_output
from sandbox.service.routes_runs import visible_run
from sandbox.service.store import TokenRow

router = APIRouter()
Tok = Annotated[TokenRow, Depends(current_token)]
Svc = Annotated[Service, Depends(service)]
CHUNK = 256 * 1024


class FileEntry(BaseModel):
    path: str
    size: int
    kind: str   # file, dir, symlink, other


class FileList(BaseModel):
    items: list[FileEntry]


@router.get("/v1/runs/{run_id}/files", response_model=FileList)
def list_files(run_id: str, tok: Tok, svc: Svc) -> FileList:
    """Every entry of the run's output directory (links listed, never followed)."""
    visible_run(svc, tok, run_id)
    return FileList(items=[FileEntry(path=f.path, size=f.size, kind=f.kind)
                           for f in list_outputs(svc.config.output_dir(run_id))])


def _disposition(path: str) -> str:
    name = os.path.basename(path)
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in name)
    return (f'attachment; filename="{ascii_name}"; '
            f"filename*=UTF-8''{urllib.parse.quote(name, safe='')}")


@router.get("/v1/runs/{run_id}/files/{path:path}",
            responses={200: {"content": {"application/octet-stream": {}}}})
async def download(run_id: str, path: str, tok: Tok, svc: Svc) -> StreamingResponse:
    """One regular file of the run's output; 404 for a link, a directory, a name
    that would leave the output directory, or a name with a control character
    (listed, never served: such a name is never near a header)."""
    await run_in_threadpool(visible_run, svc, tok, run_id)
    try:
        fd, size = await run_in_threadpool(open_output, svc.config.output_dir(run_id), path)
    except FileNotFoundError:
        raise NotFound(f"no regular file {path[:200]!r} in the run's outputs") from None

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

    return StreamingResponse(body(), media_type="application/octet-stream", headers={
        "Content-Length": str(size), "Content-Disposition": _disposition(path),
        "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
        "Content-Security-Policy": "default-src 'none'; sandbox"})

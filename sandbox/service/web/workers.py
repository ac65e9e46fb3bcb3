"""The workers and queues page (issue 17 item 4): queue depth, each worker's
slots, running sandboxes and heartbeat age, and the lease of every running
run. It reads `GET /v1/workers` with the user's token (admin only), so the
same page shows the single-machine executor when there is no broker."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .bridge import ApiError
from .common import api_error_page, current, render

router = APIRouter()


@router.get("/admin/workers")
async def workers(request: Request) -> Response:
    ctx = current(request)
    try:
        view = await ctx.api.get("/workers")
    except ApiError as err:
        return api_error_page(ctx, err)
    return render(ctx, request, "workers.html", view=view)

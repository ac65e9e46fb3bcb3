"""GET /v1/workers (admin): who executes runs. With `--broker`: the queues'
depth in Redis, each worker's slots and heartbeat age, and the lease of every
running run; without: this server's own executor in the same shape."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from sandbox.service.deps import Service, admin_token, service
from sandbox.service.models import WorkersView
from sandbox.service.store import TokenRow

router = APIRouter()


@router.get("/v1/workers", response_model=WorkersView)
async def workers(tok: Annotated[TokenRow, Depends(admin_token)],
                  svc: Annotated[Service, Depends(service)]) -> WorkersView:
    return WorkersView.model_validate(await run_in_threadpool(svc.queue.workers))

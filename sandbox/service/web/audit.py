"""A run's audit tab (every file access with its deciding rule), `policy
explain` for one path, and the learn tab (the suggested policy as a diff)."""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from . import views
from .bridge import ApiError
from .common import Ctx, api_error_page, current, render
from .runs import attachment

router = APIRouter()
SHOWN = 2000   # rows drawn in the table; the counts cover every record
# The audit's operations, as `policy explain` names them
EXPLAIN_OPS = {"read": "read", "write": "write", "create": "create", "delete": "delete",
               "exec": "exec", "metadata": "stat", "stat": "stat", "connect": "connect",
               "send": "connect", "bind": "bind"}


AUDIT_LIMIT = 10000   # records asked of the API (its maximum); the page says when cut


async def _records(ctx: Ctx, run_id: str, denied: bool) -> tuple[list[dict[str, Any]], bool]:
    """(records, truncated): denials are filtered by the API itself, so that
    a run with more records than the limit still shows every denial it can."""
    got = await ctx.api.get(f"/runs/{quote(run_id, safe='')}/audit",
                            denied=1 if denied else None, limit=AUDIT_LIMIT)
    items = got.get("items", got.get("records", [])) if isinstance(got, dict) else got
    truncated = bool(got.get("truncated")) if isinstance(got, dict) else False
    return [r for r in items or [] if isinstance(r, dict)], truncated


@router.get("/runs/{run_id}/audit")
async def audit_page(request: Request, run_id: str) -> Response:
    ctx = current(request)
    denied = request.query_params.get("denied") == "1"
    operation = request.query_params.get("operation", "")[:32]
    search = request.query_params.get("path", "")[:4096]
    try:
        run = await ctx.api.get(f"/runs/{quote(run_id, safe='')}")
        records, truncated = await _records(ctx, run_id, denied)
    except ApiError as err:
        if err.status == 404 and "no audit" in str(err.detail):
            return render(ctx, request, "audit.html", run=run, tab="audit", records=[],
                          matched=0, total=0, denied=denied, operation=operation,
                          search=search, operations=[], directories=[], truncated=False,
                          note=str(err.detail))
        return api_error_page(ctx, err)
    shown = views.filter_audit(records, denied=denied, operation=operation, search=search)
    return render(ctx, request, "audit.html", run=run, tab="audit", records=shown[:SHOWN],
                  matched=len(shown), total=len(records), denied=denied, operation=operation,
                  search=search, operations=views.operations(records),
                  directories=views.by_directory(shown), truncated=truncated, note="")


@router.get("/runs/{run_id}/explain")
async def explain_page(request: Request, run_id: str) -> Response:
    """`policy explain` of one path under the policy the run used (a GET: it
    changes nothing, so one click on a path opens it)."""
    ctx = current(request)
    path = request.query_params.get("path", "")[:4096]
    operation = request.query_params.get("operation", "")[:32]
    try:
        run = await ctx.api.get(f"/runs/{quote(run_id, safe='')}")
        # as in the run: its audit's paths are in its own directories
        body: dict[str, Any] = {"path": path, "policy": run.get("policy"),
                                "operation": EXPLAIN_OPS.get(operation, "read"),
                                "run": run.get("id")}
        explained = await ctx.api.post("/policies/explain", body)
    except ApiError as err:
        return api_error_page(ctx, err)
    return render(ctx, request, "explain.html", run=run, tab="audit", path=path,
                  explained=explained)


async def _suggestion(ctx: Ctx, run: dict[str, Any]) -> tuple[str, str]:
    """(the used policy, the suggested policy), both as the policy renderer
    writes a policy (sandbox.policy.render.to_toml, `extends` applied), so that
    the diff shows what changes and not how each was spelled."""
    run_id = quote(str(run["id"]), safe="")
    suggested = await ctx.api.get(f"/runs/{run_id}/policy/suggest")
    new = str(suggested.get("toml", "")) if isinstance(suggested, dict) else ""
    used = ""
    if run.get("policy"):
        try:
            doc = await ctx.api.get(f"/policies/{quote(str(run['policy']), safe='')}")
            used = views.policy_text(doc.get("policy") if isinstance(doc, dict) else None)
        except ApiError:
            used = ""
    return used, new


@router.get("/runs/{run_id}/learn")
async def learn_page(request: Request, run_id: str) -> Response:
    ctx = current(request)
    try:
        run = await ctx.api.get(f"/runs/{quote(run_id, safe='')}")
        used, new = await _suggestion(ctx, run)
    except ApiError as err:
        if err.status in (404, 409):
            return render(ctx, request, "learn.html", run=run, tab="learn", diff=[],
                          suggested="", note=str(err.detail))
        return api_error_page(ctx, err)
    rendered = views.suggested_text(new)
    return render(ctx, request, "learn.html", run=run, tab="learn", suggested=new, note="",
                  diff=views.policy_diff(used, rendered, str(run.get("policy") or "policy"))
                  if used and rendered else [])


@router.get("/runs/{run_id}/learn/suggested.toml")
async def learn_download(request: Request, run_id: str) -> Response:
    ctx = current(request)
    try:
        run = await ctx.api.get(f"/runs/{quote(run_id, safe='')}")
        _, new = await _suggestion(ctx, run)
    except ApiError as err:
        return Response(status_code=err.status)
    return attachment(new.encode(), f"suggested-{run_id}.toml", "application/toml")

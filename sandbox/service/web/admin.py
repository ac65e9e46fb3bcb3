"""Policy check of a pasted policy, and the admin pages: tokens, the local
executor, retention. The API decides who may: a non-admin token gets its 403."""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .bridge import ApiError
from .common import api_error_page, back, current, posted, render

router = APIRouter()
MAX_POLICY = 256 * 1024


@router.get("/policies/check")
async def check_form(request: Request) -> Response:
    ctx = current(request)
    return render(ctx, request, "check.html", text="", checked=None)


@router.post("/policies/check")
async def check(request: Request) -> Response:
    ctx, form = await posted(request)
    text = form.get("policy", "")[:MAX_POLICY]
    try:
        checked = await ctx.api.post("/policies/check", {"toml": text})
    except ApiError as err:
        if err.status == 422:
            checked = {"ok": False, "errors": err.detail if isinstance(err.detail, list)
                       else [{"message": str(err.detail)}]}
        else:
            return api_error_page(ctx, err)
    return render(ctx, request, "check.html", text=text, checked=checked)


def _items(got: Any) -> list[dict[str, Any]]:
    items = got.get("items", []) if isinstance(got, dict) else got
    return [t for t in items or [] if isinstance(t, dict)]


@router.get("/admin/tokens")
async def tokens(request: Request) -> Response:
    ctx = current(request)
    try:
        items = _items(await ctx.api.get("/tokens"))
    except ApiError as err:
        return api_error_page(ctx, err)
    return render(ctx, request, "tokens.html", tokens=items, created=None)


@router.post("/admin/tokens")
async def token_create(request: Request) -> Response:
    ctx, form = await posted(request)
    body: dict[str, Any] = {"name": form.get("name", ""),
                            "ceiling": form.get("ceiling") or None}
    for key, cast in (("max_concurrent", int), ("max_queued", int), ("rate", float)):
        if form.get(key):
            try:
                body[key] = cast(form[key])
            except ValueError:
                body[key] = form[key]   # the API's 422 names the field
    try:
        created = await ctx.api.post("/tokens", body)
        items = _items(await ctx.api.get("/tokens"))
    except ApiError as err:
        return api_error_page(ctx, err)
    # The secret is shown once, on this response only (no redirect: it must
    # not sit in a URL or the history).
    return render(ctx, request, "tokens.html", tokens=items, created=created)


@router.post("/admin/tokens/{token_id}/revoke")
async def token_revoke(request: Request, token_id: str) -> Response:
    ctx, _ = await posted(request)
    try:
        await ctx.api.call("DELETE", f"/tokens/{quote(token_id, safe='')}")
    except ApiError as err:
        return api_error_page(ctx, err)
    return back("/admin/tokens")


@router.get("/admin/executor")
async def executor(request: Request) -> Response:
    ctx = current(request)
    try:
        health = await ctx.api.call("GET", "/healthz", versioned=False)
        running = await ctx.api.get("/runs", status="running", limit=100)
        queued = await ctx.api.get("/runs", status="queued", limit=100)
    except ApiError as err:
        return api_error_page(ctx, err)
    return render(ctx, request, "executor.html", health=health,
                  running=running.get("items", []), queued=queued.get("items", []))


@router.get("/admin/retention")
async def retention(request: Request) -> Response:
    ctx = current(request)
    try:
        info = await ctx.api.get("/admin/retention")
    except ApiError as err:
        return api_error_page(ctx, err)
    return render(ctx, request, "retention.html", info=info)

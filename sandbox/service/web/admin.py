"""Policy check of a pasted policy, and the admin pages: tokens, the local
executor, retention. The API decides who may: a non-admin token gets its 403."""
from __future__ import annotations

import re
import tomllib
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from sandbox.policy.locate import Locator

from .bridge import ApiError, detail_text
from .common import api_error_page, back, current, posted, render

router = APIRouter()
MAX_POLICY = 256 * 1024
# errors listed on the check page: each is placed on its line, and a pasted policy
# of 4000 bad rules has 4000 of them (the count of the rest is shown)
SHOWN_ERRORS = 100


@router.get("/policies/check")
async def check_form(request: Request) -> Response:
    ctx = current(request)
    return render(ctx, request, "check.html", text="", checked=None)


@router.post("/policies/check")
async def check(request: Request) -> Response:
    """Check a pasted policy: TOML syntax here (tomllib gives line and column),
    then the API's own check of the document (the loader's rules and the
    token's ceiling), each error placed on the line of the key it names."""
    ctx, form = await posted(request)
    text = form.get("policy", "")[:MAX_POLICY]
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        where = _syntax_place(str(err))
        return render(ctx, request, "check.html", text=text, checked={
            "ok": False, "errors": [{"line": where[0], "column": where[1], "message": str(err)}]})
    try:
        checked = await ctx.api.post("/policies/check", {"policy_inline": doc})
    except ApiError as err:
        checked = {"ok": False, "errors": [{"message": detail_text(err.detail)}]}
    if not checked.get("ok"):
        # the text is indexed once: indexed again per error, 4000 errors cost 24 s of
        # the server's CPU on its event loop (probe 2026-12-07)
        errors = list(checked.get("errors") or [])
        lines = Locator(text)
        checked["errors"] = [_locate(lines, e) for e in errors[:SHOWN_ERRORS]]
        if len(errors) > SHOWN_ERRORS:
            checked["errors"].append({"message": f"... and {len(errors) - SHOWN_ERRORS} "
                                                 "more errors"})
    return render(ctx, request, "check.html", text=text, checked=checked)


_PLACE = re.compile(r"line (\d+), column (\d+)")
_KEY = re.compile(r"(?:^|: )((?:filesystem|network|limits|syscalls|audit|env|name|description|"
                  r"best_effort|extends)(?:\.[A-Za-z0-9_]+)*)(?:\[\d+\])?: ")


def _syntax_place(message: str) -> tuple[int | None, int | None]:
    m = _PLACE.search(message)
    return (int(m.group(1)), int(m.group(2))) if m else (None, None)


def _locate(where: Locator, error: Any) -> dict[str, Any]:
    """An error of the API's check ('<policy data>: limits.memory: ...') with
    the line of its key in the pasted text (sandbox.policy.locate)."""
    if isinstance(error, dict):
        return error
    message = str(error)
    m = _KEY.search(message)
    if not m:
        return {"message": message}
    key = m.group(1)
    return {"line": where.line_of(key), "key": key,
            "message": message[m.end():] or message}


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
    """The server's retention setting (`sandbox serve --retain`). It is the
    server's configuration, not any tenant's data, and there is no /v1 route
    for it: the page shows it only after the API confirmed an admin token."""
    ctx = current(request)
    try:
        await ctx.api.get("/tokens")          # 403 unless admin
    except ApiError as err:
        return api_error_page(ctx, err)
    config = getattr(getattr(request.app.state, "service", None), "config", None)
    retain = getattr(config, "retain", None)
    info = {"keep finished runs for": "forever (no --retain)" if retain is None
            else f"{retain / 86400:g} days ({retain:g} s)"}
    return render(ctx, request, "retention.html", info=info)

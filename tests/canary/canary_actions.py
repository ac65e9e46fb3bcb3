"""Actions for tests/test_environ_canary.py: scan from inside, or nest a scan."""
from __future__ import annotations

from canary_scan import scan

from sandbox.workflow import ActionContext, action


@action("canary.scan")
def scan_action(ctx: ActionContext) -> None:
    ctx.store.put("scan", scan(ctx.params["prefix"], ctx.params["spec"]))


@action("canary.nest")
def nest_action(ctx: ActionContext) -> None:
    child = {"name": "canary-nested", "imports": ["canary_actions"],
             "stages": [{"id": "s", "actions": [
                 {"name": "canary.scan", "params": dict(ctx.params)}]}]}
    res = ctx.spawn(child)
    ctx.store.put("nested_status", res["status"])
    ctx.store.put("scan", res["store"].get("scan"))

"""Actions for the nested-policy attack tests (imported inside the sandbox)."""
from __future__ import annotations

import glob
import os

from sandbox.workflow import action


@action("pol.write")
def write(ctx):
    """Try to create each of `paths` (expanding '$OUTPUT' to this run's output dir)."""
    out = os.environ.get("SANDBOX_OUTPUT", "")
    done = {}
    for raw in ctx.params["paths"]:
        path = raw.replace("$OUTPUT", out).replace("$CWD", os.getcwd())
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        except OSError:
            pass
        try:
            with open(path, "w") as f:
                f.write("* * * * * root id > /tmp/pwned\n")
            done[raw] = "written"
        except OSError as exc:
            done[raw] = f"{type(exc).__name__}: {exc.errno}"
    ctx.store.put("writes", done)


@action("pol.read")
def read(ctx):
    """Try to read each of `paths` (globs expanded inside the sandbox)."""
    got = {}
    for pattern in ctx.params["paths"]:
        for path in sorted(glob.glob(pattern, include_hidden=True)) or [pattern]:
            try:
                with open(path, "rb") as f:
                    got[path] = f.read(200).decode("utf-8", "replace")
            except OSError as exc:
                got[path] = f"{type(exc).__name__}: {exc.errno}"
    ctx.store.put("reads", got)


@action("pol.nest")
def nest(ctx):
    result = ctx.spawn(ctx.params["child"], policy=ctx.params.get("policy"))
    ctx.store.put("child_result", {"status": result["status"], "reason": result["reason"],
                                   "store": result["store"]})


@action("pol.symlink")
def symlink(ctx):
    """Plant `link` -> `target` in `base` (a host tree this run can write; default its
    output, a private tmpfs until the run ends), then spawn `child` (may name it)."""
    out = ctx.params.get("base") or os.environ["SANDBOX_OUTPUT"]
    if ctx.params["target"] is None:     # a real directory (that it could swap later)
        os.mkdir(os.path.join(out, ctx.params["link"]))
    else:
        os.symlink(ctx.params["target"], os.path.join(out, ctx.params["link"]))
    policy = ctx.params["policy"]
    text = repr(policy).replace("$PARENT_OUTPUT", out)
    import ast
    policy = ast.literal_eval(text)
    child = ast.literal_eval(repr(ctx.params["child"]).replace("$PARENT_OUTPUT", out))
    result = ctx.spawn(child, policy=policy)
    ctx.store.put("child_result", {"status": result["status"], "reason": result["reason"],
                                   "store": result["store"]})


@action("pol.rlimits")
def rlimits(ctx):
    import resource
    ctx.store.put("nofile", resource.getrlimit(resource.RLIMIT_NOFILE)[1])


@action("pol.fire")
def fire(ctx):
    """Send a spawn_request and end without waiting for its answer: at once, or after
    `linger` seconds (the request is surely being worked on when the run ends)."""
    import json
    import struct
    import time
    body = json.dumps({"type": "spawn_request", "payload": {
        "request_id": "r1", "workflow": ctx.params["child"],
        "policy": ctx.params["policy"]}}).encode()
    os.write(int(os.environ["SANDBOX_IPC_FD"]), struct.pack(">I", len(body)) + body)
    time.sleep(ctx.params.get("linger", 0))
    ctx.store.put("fired", True)

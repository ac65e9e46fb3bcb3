"""Actions and child-side middleware for the middleware/parallel/nested tests.

Imported inside the sandbox (the tests pass this directory as a code path).
"""
from __future__ import annotations

import json
import os
import struct
import subprocess

from sandbox.ipc.frames import Message
from sandbox.workflow import action


def raw_frame(obj: dict) -> None:
    """Write a frame directly to the IPC descriptor, bypassing the Channel and its middleware."""
    body = json.dumps(obj).encode()
    os.write(int(os.environ["SANDBOX_IPC_FD"]), struct.pack(">I", len(body)) + body)


@action("mw.leak")
def leak(ctx):
    ctx.logger.info("connecting with password=hunter2 to db", extra={"api_key": "k-123"})
    ctx.store.put("password", "hunter2")
    ctx.store.put("config", {"user": "ann", "api_key": "k-123", "n": 3})
    ctx.store.put("note", "the secret is hunter2")
    ctx.send("custom.event", {"token_echo": "hunter2", "ok": True})


@action("mw.chat")
def chat(ctx):
    ctx.logger.info("one")
    ctx.send("noise", {"n": 1})
    ctx.send("custom.event", {"n": 1})
    ctx.store.put("answer", 42)


@action("mw.tamper")
def tamper(ctx):
    ctx.send("custom.before", 1)
    raw_frame({"type": "custom.evil", "payload": 1, "seq": 10**9, "mac": "00" * 32})
    ctx.send("custom.after", 2)
    ctx.store.put("after_tamper", True)


@action("mw.unauth")
def unauth(ctx):
    raw_frame({"type": "custom.plain", "payload": 1})
    ctx.store.put("after", True)


@action("mw.put")
def put(ctx):
    ctx.store.put(ctx.params["key"], ctx.params["value"])


@action("mw.nest")
def nest(ctx):
    result = ctx.spawn(ctx.params["child"], policy=ctx.params.get("policy"))
    ctx.store.put(ctx.params.get("as", "child_result"),
                  {"status": result["status"], "reason": result["reason"],
                   "depth": result.get("depth"), "store": result["store"]})


@action("mw.item")
def item(ctx):
    if ctx.item == "fail":
        raise ValueError(f"item {ctx.index} fails")
    if isinstance(ctx.item, str) and ctx.item.startswith("sleep:"):
        subprocess.run(["sleep", ctx.item.split(":", 1)[1]], check=False)
    ctx.store.put("seen", {"item": ctx.item, "index": ctx.index})


@action("mw.bail")
def bail(ctx):
    ctx.store.put("before_bail", 1)
    ctx.bail("nothing more to do")


@action("mw.after_bail")
def after_bail(ctx):
    ctx.store.put("after_bail", 1)


class Wrapper:
    """Child half of a wrap/unwrap pair: outbound wraps custom messages in `name`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def outbound(self, msg: Message) -> Message | None:
        if msg.type in ("store_put", "log", "result", "final_store", "error",
                        "store_delete", "spawn_request"):
            return msg
        return Message(f"{self.name}.wrapped", {"w": self.name, "type": msg.type,
                                                "inner": msg.payload}, dict(msg.extra))

    def inbound(self, msg: Message) -> Message | None:
        return msg


def wrapper(name: str) -> Wrapper:
    return Wrapper(name)


class Dropper:
    def __init__(self, drop: str) -> None:
        self.drop = drop

    def outbound(self, msg: Message) -> Message | None:
        return None if msg.type == self.drop else msg

    def inbound(self, msg: Message) -> Message | None:
        return msg


def dropper(drop: str) -> Dropper:
    return Dropper(drop)


@action("mw.fan")
def fan(ctx):
    """A nested tree: `width` children in parallel, `depth` levels below this one.
    Tells the launcher when it runs and when it only waits for its children, so
    the host can count the sandboxes that really run at any moment."""
    import threading
    import time
    width, depth = ctx.params["width"], ctx.params["depth"]
    ctx.send("fan", "busy")
    time.sleep(ctx.params.get("work", 0.3))   # the run really runs a while
    statuses = []
    if depth > 0:
        child = {"name": "fan", "imports": ["mw_actions"],
                 "stages": [{"id": "s", "actions": [
                     {"name": "mw.fan", "params": {"width": width, "depth": depth - 1}}]}]}
        ctx.send("fan", "wait")   # read by the launcher before the spawn requests
        threads = [threading.Thread(target=lambda: statuses.append(ctx.spawn(child)))
                   for _ in range(width)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ctx.send("fan", "busy")
    ctx.store.put("tree", {"ok": sum(1 + r["store"].get("tree", {}).get("ok", 0)
                                     for r in statuses if r["status"] == "ok"),
                           "bad": [r["reason"] for r in statuses if r["status"] != "ok"]
                           + [b for r in statuses for b in r["store"].get("tree", {}).get("bad", [])]})
    ctx.send("fan", "done")


@action("mw.undecodable")
def undecodable(ctx):
    """An honest action naming a file whose name is not UTF-8 (os.listdir gives it as
    a lone surrogate, surrogateescape): in a log record and a store value."""
    name = os.fsdecode(b"report-\xff.txt")
    ctx.logger.info(f"wrote {name}")
    ctx.store.put("file", name)

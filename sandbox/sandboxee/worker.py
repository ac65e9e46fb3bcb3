"""The workflow side of PID 1: run the workflow with a store and logger that speak IPC.

The same in-process `Runner` as `sandbox.workflow` runs the definition; only
its sinks differ: every store change becomes a live ``store_put`` /
``store_delete`` message, every log record a ``log`` message, and
`ctx.send(type, payload)` a custom message. At the end come ``final_store``
(the store plus which keys changed) and ``result``. The workflow definition
arrived as the first frame (``start``) on the same descriptor, never through
argv, the environment or stdout.
"""
from __future__ import annotations

import importlib
import random
import sys
from typing import Any

from sandbox.errors import SandboxError
from sandbox.ipc.channel import Channel
from sandbox.nested import ChildSpawner  # imported before containment, not under it
from sandbox.workflow import Runner, Workflow
from sandbox.workflow.registry import Registry

RESERVED = frozenset({"log", "store_put", "store_delete", "error", "final_store", "result",
                      "start", "spawn_request", "spawn_result"})


def run(ipc_fd: int, registry: Registry | None = None) -> int:
    # PID 1 forked this process without the at-fork hooks (sandbox.sandboxee.forking):
    # `random`'s state is still the template's, the same in every sandbox
    random.seed()
    chan = Channel(ipc_fd, coalesce=True)
    try:
        return _run(chan, registry)
    finally:
        chan.close()  # everything queued reaches the launcher before PID 1 exits


def _run(chan: Channel, registry: Registry | None = None) -> int:
    # The runtime and the action code are read-only in the view: trying to cache
    # bytecode there would only produce denied writes (and audit records of them).
    sys.dont_write_bytecode = True
    try:
        start = chan.recv()
        if start is None or start.type != "start" or not isinstance(start.payload, dict):
            raise SandboxError("the first IPC frame must be 'start' with the workflow")
        body: dict[str, Any] = start.payload
        sys.path[:0] = body.get("sys_path", [])
        for module in body.get("imports", ()):
            importlib.import_module(module)
        workflow = Workflow.from_dict(body["workflow"], source="<ipc start>")
        _install_middleware(chan, body.get("middleware") or [])
    except Exception as exc:  # reported to the parent as an error, never printed
        _send_error(chan, exc, stage=None, action=None)
        chan.send("result", {"status": "error"})
        return 1

    def on_change(op: str, key: str, value: Any) -> None:
        if op == "put":
            chan.send("store_put", {"key": key, "value": value})
        else:
            chan.send("store_delete", {"key": key})

    def log_sink(level: str, message: str, extra: dict[str, Any]) -> None:
        chan.send("log", {**extra, "level": level, "message": message})

    def send(type_: str, payload: Any = None) -> None:
        if type_ in RESERVED:
            raise ValueError(f"message type {type_!r} is reserved by the protocol")
        chan.send(type_, payload)

    outcome = Runner(registry).run(workflow, store=body.get("store"), on_change=on_change,
                           log_sink=log_sink, send=send, run_id=body.get("run_id"),
                           output_dir=body.get("output_dir"), item=body.get("item"),
                           index=body.get("index"), spawn=ChildSpawner(chan).spawn)
    if outcome.error:
        chan.send("error", outcome.error)
    chan.send("final_store", {"store": outcome.store, "changed": sorted(outcome.changed),
                              "deleted": sorted(outcome.deleted)})
    chan.send("result", {"status": outcome.status, "bailed": outcome.bailed,
                         "bail_reason": outcome.bail_reason})
    sys.stdout.flush()
    return 0 if outcome.status == "ok" else 1


def _install_middleware(chan: Channel, specs: list[Any]) -> None:
    """The child's half of the IPC middleware, built from the `start` frame's specs."""
    if specs:
        from sandbox.middleware.base import build_chain
        chain = build_chain(specs)
        chan.outbound, chan.inbound = chain.outbound, chain.inbound


def _send_error(chan: Channel, exc: BaseException, *, stage: str | None,
                action: str | None) -> None:
    import traceback
    chan.send("error", {"type": type(exc).__name__, "message": str(exc),
                        "traceback": "".join(traceback.format_exception(exc)),
                        "stage": stage, "action": action})

"""IPC middleware, spawn lifecycle hooks and the built-in middleware.

    launcher.use(Metrics)                       # per-run factory: RunResult.metrics
    launcher.use(redaction(["password"]))       # in the child, before anything leaves it
    launcher.use(HmacAuth)                      # per-run key, every frame signed
    launcher.use(transform(inbound=fn))         # (type, payload) -> (type, payload) | None
    launcher.use(child("mymod:factory", x=1))   # child-side only, built from the start frame
    launcher.before_spawn(fn); launcher.after_spawn(fn); launcher.on_child_message(fn)

Order rule: first registered = outermost (outbound mw1..mwN, inbound mwN..mw1).
See docs/middleware.md.
"""
from sandbox.middleware.auth import AuthError, HmacAuth
from sandbox.middleware.base import (Chain, FunctionMiddleware, IpcMiddleware, SpawnInfo,
                                     build_chain, child, transform)
from sandbox.middleware.hooks import HookRefused, Hooks, SpawnRequest
from sandbox.middleware.metrics import Metrics
from sandbox.middleware.redact import Redactor, redaction

__all__ = ["AuthError", "Chain", "FunctionMiddleware", "HmacAuth", "HookRefused", "Hooks",
           "IpcMiddleware", "Metrics", "Redactor", "SpawnInfo", "SpawnRequest", "build_chain",
           "child", "redaction", "transform"]

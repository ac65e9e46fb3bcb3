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
import importlib
from typing import Any

_WHERE = {
    "AuthError": "auth", "HmacAuth": "auth",
    "Chain": "base", "FunctionMiddleware": "base", "IpcMiddleware": "base", "SpawnInfo": "base",
    "build_chain": "base", "child": "base", "transform": "base",
    "HookRefused": "hooks", "Hooks": "hooks", "SpawnRequest": "hooks",
    "Metrics": "metrics", "Redactor": "redact", "redaction": "redact",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """Lazy: the launcher imports only what a run uses (hmac and hashlib, for
    one, only when HmacAuth is asked for)."""
    if name not in _WHERE:
        raise AttributeError(f"module 'sandbox.middleware' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"sandbox.middleware.{_WHERE[name]}"), name)
    globals()[name] = value
    return value

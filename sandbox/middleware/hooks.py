"""Spawn lifecycle hooks: before spawn, after spawn, on each child message.

    launcher.before_spawn(fn)   fn(req: SpawnRequest) -> None; may set req.target
                                (rewrite the workflow) and req.policy (tighten only)
    launcher.after_spawn(fn)    fn(result: RunResult, info: SpawnInfo); ALWAYS called,
                                also on setup_error and when spawn() raises
    launcher.on_child_message(fn)  fn(msg, run_info) for every message of every run

Registration is idempotent by identity: adding the same callable twice keeps
one entry, so a hook registered in a loop or by two code paths runs once per
spawn (bound methods count as the same when they bind the same function to
the same object). `remove_hook(fn)` takes it out.

A `before_spawn` hook that raises, or that sets a policy that is not
`is_narrower_or_equal` to the one it was given, stops the spawn: nothing
runs and the RunResult is ``setup_error`` with the reason. Errors of the
other hooks are reported in ``RunResult.handler_errors`` (stage
``after_spawn`` / ``on_child_message``); they never end a run.
"""
from __future__ import annotations

import threading
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from sandbox.launcher.records import add_record
from sandbox.middleware.base import SpawnInfo
from sandbox.policy.compare import is_narrower_or_equal
from sandbox.policy.model import Policy

KINDS = ("before_spawn", "after_spawn", "on_child_message")


class HookRefused(Exception):
    """A before_spawn hook raised or tried to loosen the policy."""


@dataclass
class SpawnRequest:
    target: Any            # a Workflow (workflow runs) or an argv list (programs)
    mode: str              # "workflow" | "exec"
    policy: Policy         # the raw policy the run will use
    info: SpawnInfo


def _same(a: Callable, b: Callable) -> bool:
    return a is b or (hasattr(a, "__self__") and hasattr(a, "__func__") and a == b)


class Hooks:
    """The launcher's hooks by kind. Each kind's hooks are a tuple replaced whole under
    the lock when one is added or removed, so running them (every child message
    passes `on_message`) reads one attribute, with no lock and no copy."""

    def __init__(self) -> None:
        self._hooks: dict[str, tuple[Callable, ...]] = {k: () for k in KINDS}
        self._lock = threading.Lock()

    def add(self, kind: str, fn: Callable) -> Callable:
        if kind not in self._hooks:
            raise ValueError(f"unknown hook {kind!r} (known: {', '.join(KINDS)})")
        with self._lock:
            if not any(_same(h, fn) for h in self._hooks[kind]):
                self._hooks[kind] += (fn,)
        return fn

    def remove(self, fn: Callable, kind: str | None = None) -> bool:
        found = False
        with self._lock:
            for k in (kind,) if kind else KINDS:
                before = len(self._hooks[k])
                self._hooks[k] = tuple(h for h in self._hooks[k] if not _same(h, fn))
                found |= len(self._hooks[k]) != before
        return found

    def get(self, kind: str) -> tuple[Callable, ...]:
        return self._hooks[kind]

    # -- running them --------------------------------------------------------------
    def before(self, req: SpawnRequest) -> SpawnRequest:
        """Run before_spawn hooks in order; raise HookRefused if one fails or loosens."""
        original = req.policy
        for fn in self.get("before_spawn"):
            name = getattr(fn, "__qualname__", repr(fn))
            try:
                fn(req)
            except Exception as exc:
                raise HookRefused(f"before_spawn hook {name} raised "
                                  f"{type(exc).__name__}: {exc}") from exc
            if not isinstance(req.policy, Policy):
                raise HookRefused(f"before_spawn hook {name} set policy to "
                                  f"{type(req.policy).__name__}, not a Policy")
            ok, why = is_narrower_or_equal(req.policy, original)
            if not ok:
                raise HookRefused(f"before_spawn hook {name} may only tighten the policy: {why}")
        return req

    def after(self, result: Any, info: SpawnInfo) -> None:
        for fn in self.get("after_spawn"):
            try:
                fn(result, info)
            except Exception as exc:
                result.handler_errors.append(error_record("after_spawn", fn, exc))

    def on_message(self, msg: Any, run_info: Any, errors: list[dict[str, Any]]) -> None:
        for fn in self.get("on_child_message"):
            try:
                fn(msg, run_info)
            except Exception as exc:
                add_record(errors, lambda: {**error_record("on_child_message", fn, exc),
                                            "message_type": msg.type})


def error_record(stage: str, fn: Callable, exc: BaseException) -> dict[str, Any]:
    return {"stage": stage, "hook": getattr(fn, "__qualname__", repr(fn)),
            "type": type(exc).__name__, "message": str(exc),
            "traceback": "".join(traceback.format_exception(exc))}

"""Per-run wiring of middleware, hooks and nested spawns for `Launcher.spawn`.

Kept out of the launcher so that `spawn` reads as the sequence of a run:
`RunPlumbing` instantiates the run's middleware (launcher-level first, then
the run's own), gives the session its inbound chain, the `start` frame its
child specs, serves ``spawn_request`` messages, calls on-message hooks, and
at the end lets each middleware finish the RunResult.
"""
from __future__ import annotations

import threading
from typing import Any, Sequence

from sandbox.ipc.frames import Message, encode
from sandbox.middleware.base import Chain, SpawnInfo, child_specs, instantiate
from sandbox.middleware.hooks import error_record
from sandbox.nested import Lineage, NestedService
from sandbox.policy.model import Policy


class RunPlumbing:
    def __init__(self, launcher: Any, info: SpawnInfo, *, middleware: Sequence[Any],
                 lineage: Lineage, policy: Policy, code_paths: Sequence[str],
                 resolved: Policy | None = None) -> None:
        self.launcher, self.info = launcher, info
        self.middleware = instantiate([*launcher.middleware, *middleware], info)
        self.chain = Chain(self.middleware)
        self.child_specs = child_specs(self.middleware)
        self.session: Any = None
        self._ipc: Any = None
        self._send_lock = threading.Lock()
        self.nested = NestedService(launcher, run_id=info.run_id, lineage=lineage,
                                    policy=policy, resolved=resolved, send=self.send,
                                    code_paths=code_paths,
                                    middleware=middleware,
                                    max_frame=launcher.budget.max_frame)

    def attach(self, session: Any, ipc: Any, run_handlers: Any) -> None:
        self.session, self._ipc = session, ipc
        self.nested.set_own_handlers([run_handlers])

    # -- to the child --------------------------------------------------------------
    def send(self, type_: str, payload: Any) -> None:
        """A launcher -> child frame (after `start`) through the outbound chain."""
        msg = self.chain.outbound(Message(type_, payload))
        if msg is None:
            return
        frame = encode(msg.type, msg.payload, max_frame=self.launcher.budget.max_frame,
                       **msg.extra)
        with self._send_lock:
            self._ipc.sendall(frame)

    # -- from the child (called by the session) -------------------------------------
    def inbound(self, msg: Message) -> Message | None:
        return self.chain.inbound(msg)

    def on_message(self, msg: Message) -> None:
        if msg.type == "spawn_request":
            self.nested.submit(msg.payload)
        if self.session is not None:
            self.launcher.hooks.on_message(msg, self.session.info,
                                           self.session.state.handler_errors)

    # -- end of run ----------------------------------------------------------------
    def close(self, grace: float) -> None:
        self.nested.close(timeout=grace + 5.0)

    def finish(self, result: Any) -> None:
        if self.session is not None:
            result.rejected = list(self.session.state.rejected)
        if self.nested.runs:
            result.nested = list(self.nested.runs)
        for mw in self.middleware:
            fin = getattr(mw, "finish", None)
            if fin is None:
                continue
            try:
                fin(result)
            except Exception as exc:
                result.handler_errors.append(error_record("middleware.finish", fin, exc))

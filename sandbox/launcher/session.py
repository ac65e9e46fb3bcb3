"""One run seen from the launcher: read IPC, apply store updates, call handlers.

A `select` loop over the sandboxee's IPC socket, the monitor's control
socket and (when captured) the child's stdout/stderr pipes. The launcher's
memory stays bounded whatever the child does: a frame is refused from its
header when it announces more than `max_frame` bytes, and a run may send at
most `max_messages` messages and `max_bytes` bytes in all. Breaking either
rule, or sending something that is not a frame, is a protocol violation: the
launcher asks the monitor to kill the sandbox and the run ends as
`violation` with the reason.
"""
from __future__ import annotations

import os
import selectors
import signal
import socket
import threading
import time
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from sandbox.errors import ProtocolError
from sandbox import protocol
from sandbox.ipc.frames import DEFAULT_MAX_FRAME, FrameDecoder, Message
from sandbox.launcher.handlers import HandlerSet, RunInfo, dispatch
from sandbox.launcher.records import Records
from sandbox.protocol import EXIT_REPORT_MAX, ExitReport, ProgramStopped
from sandbox.jsontypes import JSON

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from sandbox.launcher.monitors import Monitor

CAPTURE_LIMIT = 16 << 20  # bytes kept per captured stream


@dataclass
class Budget:
    max_frame: int = DEFAULT_MAX_FRAME
    max_messages: int = 100_000
    max_bytes: int = 256 << 20
    # What the launcher keeps for the result (logs, store values, error, final store,
    # result), as estimated memory (frames.memory_cost), not wire bytes: JSON such
    # as `[[],[],...]` grows ~25x when decoded.
    max_retained: int = 64 << 20


@dataclass
class SessionState:
    store: dict[str, Any]
    changed: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    logs: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    final: dict[str, Any] | None = None
    child_result: dict[str, Any] | None = None
    counts: dict[str, int] = field(default_factory=dict)
    messages: int = 0
    bytes: int = 0
    retained: int = 0   # estimated memory of the payloads kept (Budget.max_retained)
    violation: dict[str, Any] | None = None
    # bounded (sandbox.launcher.records): the child decides how many there are
    handler_errors: Records = field(default_factory=Records)
    rejected: Records = field(default_factory=Records)   # refused by inbound middleware
    monitor_report: ExitReport | None = None
    stdout: bytearray | None = None
    stderr: bytearray | None = None


class Session:
    def __init__(self, *, run_id: str, proc: Monitor, ipc: socket.socket,
                 ctl: socket.socket, store: dict[str, JSON], budget: Budget,
                 handler_sets: list[HandlerSet], wall: float | None,
                 inbound: Callable[[Message], Message | None] | None = None,
                 on_message: Callable[[Message], None] | None = None, depth: int = 0,
                 cancel: threading.Event | None = None, grace: float = 2.0,
                 on_output: Callable[[str, bytes], None] | None = None) -> None:
        self.run_id, self.proc, self.ipc, self.ctl = run_id, proc, ipc, ctl
        self.on_output = on_output   # captured stdout/stderr chunks, as they arrive
        self.on_stopped: Callable[[], None] | None = None   # the program stopped at its pty
        self.budget = budget
        self.handler_sets = handler_sets
        self.inbound = inbound
        self.on_message = on_message
        self.state = SessionState(store=store)
        self.info = RunInfo(run_id, depth)
        # Cancellation from another thread (parallel runs, nested runs of a finished
        # parent): polled by the loop; the monitor gets `grace` seconds to kill the
        # sandbox before the monitor itself is killed (PDEATHSIG takes the rest).
        self.cancel_token, self.grace = cancel, grace
        self._grace_deadline: float | None = None
        self.ipc_decoder = FrameDecoder(budget.max_frame)
        self.ctl_decoder = FrameDecoder(EXIT_REPORT_MAX)
        # Backstop only: the monitor enforces the wall limit; this catches a wedged monitor.
        self.backstop = None if wall is None else time.monotonic() + wall + 10.0
        self._cancelled = False

    # -- control -------------------------------------------------------------
    def send_msg(self, msg: DataclassInstance) -> None:
        """One typed message (sandbox.protocol) to the monitor; a gone monitor is noticed
        by the loop, not here."""
        frame = protocol.to_frame(msg, protocol.SPEC_MAX)
        try:
            # MSG_NOSIGNAL: the Forwarder relays SIGPIPE, so a send to a gone monitor
            # raising one at this process would be relayed, fail, raise one again...
            self.ctl.sendall(frame, socket.MSG_NOSIGNAL)
        except OSError:
            pass

    def cancel(self, reason: str = "cancelled") -> None:
        if not self._cancelled:
            self._cancelled = True
            self.send_msg(protocol.Cancel(reason))

    def _check_cancel(self) -> bool:
        """Act on the cancel token; True when the monitor was just killed after the grace."""
        if not self.cancel_token.is_set():  # type: ignore[union-attr]
            return False
        now = time.monotonic()
        if self._grace_deadline is None:
            self._grace_deadline = now + self.grace
            self.cancel("cancelled")
        elif now >= self._grace_deadline:
            self.proc.kill()  # the monitor did not act in time; PDEATHSIG takes the sandbox
            self.state.monitor_report = ExitReport(cancelled=True, killed_after_grace=True)
            return True
        return False

    # -- loop ----------------------------------------------------------------
    def run(self) -> SessionState:
        sel = selectors.DefaultSelector()
        sel.register(self.ipc, selectors.EVENT_READ, "ipc")
        sel.register(self.ctl, selectors.EVENT_READ, "ctl")
        for name in ("stdout", "stderr"):
            pipe = getattr(self.proc, name)
            if pipe is not None:
                setattr(self.state, name, bytearray())
                sel.register(pipe, selectors.EVENT_READ, name)
        ipc_open = True
        while sel.get_map():
            timeout = None
            if self.backstop is not None:
                timeout = max(0.0, self.backstop - time.monotonic())
            if self.state.monitor_report is not None and ipc_open:
                timeout = 0.5  # sandbox gone: drain what is left, do not wait for stragglers
            if self.cancel_token is not None and self.state.monitor_report is None:
                timeout = 0.05 if timeout is None else min(timeout, 0.05)
                if self._check_cancel():
                    continue
            events = sel.select(timeout)
            if not events and self.cancel_token is not None and self.state.monitor_report is None \
                    and (self.backstop is None or time.monotonic() < self.backstop):
                continue  # only a poll tick of the cancel token
            if not events:
                if self.state.monitor_report is None:
                    self.proc.kill()  # monitor wedged: PDEATHSIG takes the sandbox down with it
                    self.state.monitor_report = ExitReport(monitor_killed=True)
                for key in list(sel.get_map().values()):
                    sel.unregister(key.fileobj)
                break
            for key, _ in events:
                if key.data == "ipc":
                    if not self._read_ipc():
                        sel.unregister(self.ipc)
                        ipc_open = False
                elif key.data == "ctl":
                    if not self._read_ctl():
                        sel.unregister(self.ctl)
                else:
                    if not self._read_pipe(key.fileobj, key.data):
                        sel.unregister(key.fileobj)
        sel.close()
        return self.state

    def _read_pipe(self, pipe: Any, name: str) -> bool:
        data = os.read(pipe.fileno(), 65536)
        if not data:
            return False
        buf: bytearray = getattr(self.state, name)
        room = CAPTURE_LIMIT - len(buf)
        if room > 0:
            buf += data[:room]
            if self.on_output is not None:
                try:
                    self.on_output(name, data[:room])
                except Exception as exc:   # the caller's callback never stops the run
                    self.state.handler_errors.append({
                        "handler_id": 0, "message_type": name, "type": type(exc).__name__,
                        "message": str(exc), "traceback": ""})
        return True

    def _read_ctl(self) -> bool:
        try:
            data = self.ctl.recv(65536)
        except OSError:
            data = b""
        if not data:
            if self.state.monitor_report is None:
                self.state.monitor_report = ExitReport(monitor_lost=True)
            return False
        try:
            messages = self.ctl_decoder.feed(data)
            for msg in messages:
                got = typing.cast("ExitReport | ProgramStopped", protocol.parse(
                    msg.type, msg.payload, ExitReport, ProgramStopped))
                if isinstance(got, ProgramStopped):
                    if self.on_stopped is not None:
                        self.on_stopped()   # (signals.Forwarder.program_stopped)
                elif self.state.monitor_report is None:
                    self.state.monitor_report = got
        except ProtocolError as exc:
            # Exactly the shape the monitor may send, or nothing of it: a report
            # that does not parse cannot say what happened.
            self.state.monitor_report = ExitReport(bad_report=str(exc)[:500])
            return False
        return True

    def _read_ipc(self) -> bool:
        try:
            data = self.ipc.recv(262144)
        except OSError:
            data = b""
        if not data:
            if self.ipc_decoder.pending and self.state.violation is None:
                self._violate("stream ended inside a frame")
            return False
        if self.state.violation is not None:
            return True  # discard: the sandbox is being killed
        try:
            messages = self.ipc_decoder.feed(data)
        except ProtocolError as exc:
            self._violate(str(exc))
            return True
        st, budget, handle = self.state, self.budget, self._handle
        for msg in messages:
            st.messages += 1
            st.bytes += msg.size
            if st.messages > budget.max_messages or st.bytes > budget.max_bytes:
                self._violate(f"message budget exceeded ({budget.max_messages} messages "
                              f"or {budget.max_bytes} bytes per run)")
                return True
            handle(msg)
        return True

    def _act_on(self, msg: Message) -> bool:
        """What the launcher does with a frame it acts on (the types in `_SHAPES`);
        False when the frame is malformed (the run is then a violation)."""
        st, p = self.state, msg.payload
        problem = check_payload(msg.type, p)
        if problem is not None:
            self._violate(f"malformed {msg.type!r} message: {problem}")
            return False
        try:
            if msg.type == "store_put":
                st.store[p["key"]] = p["value"]
                st.changed.add(p["key"])
                st.deleted.discard(p["key"])
            elif msg.type == "store_delete":
                st.store.pop(p["key"], None)
                st.deleted.add(p["key"])
                st.changed.discard(p["key"])
            elif msg.type == "log":
                st.logs.append(p)
            elif msg.type == "error":
                st.error = p
            elif msg.type == "final_store":
                st.final = p
            elif msg.type == "result":
                st.child_result = p
        except (TypeError, KeyError) as exc:
            self._violate(f"malformed {msg.type!r} message: {exc!r}")
            return False
        return True

    def _violate(self, reason: str) -> None:
        self.state.violation = {"kind": "ipc", "reason": reason}
        self.cancel("ipc violation")

    # -- messages ------------------------------------------------------------
    def _handle(self, msg: Message) -> None:
        if self.inbound is not None:
            try:
                transformed = self.inbound(msg)
            except ProtocolError as exc:   # a middleware says the child broke the protocol
                self._violate(f"{msg.type!r} frame: {exc}")
                return
            except Exception as exc:       # rejected: reported, the reader goes on
                self.state.rejected.append({"message_type": msg.type, "stage": "inbound",
                                            "type": type(exc).__name__, "message": str(exc)})
                return
            if transformed is None:
                return
            msg = transformed
        st = self.state
        # Kept for the result: each new type name (RunResult.messages counts by type,
        # and the child chooses the names) and the payloads the launcher acts on.
        type_ = msg.type
        counts = st.counts
        seen = counts.get(type_, 0)
        acted_on = type_ in _SHAPES
        # A custom message (not one the launcher acts on) of a type already seen keeps
        # nothing: its count only. The rest is charged as kept.
        if not seen or acted_on:
            kept = 0 if seen else 2 * len(type_) + 100
            if acted_on:
                kept += msg.cost
            if kept:
                st.retained += kept
                if st.retained > self.budget.max_retained:
                    self._violate(f"retained-memory budget exceeded "
                                  f"({self.budget.max_retained} bytes of logs, store values "
                                  "and message type names per run, estimated as decoded)")
                    return
        counts[type_] = seen + 1
        if acted_on and not self._act_on(msg):
            return
        if self.on_message is not None:
            self.on_message(msg)
        dispatch(self.handler_sets, msg, self.info, st.handler_errors)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


# The frames the launcher itself acts on, and the shape each payload must have:
# field -> (check, required). Anything else in a payload is kept as sent (it is
# JSON already: finite numbers, bounded depth, see sandbox.ipc.frames).
_STR = (lambda v: isinstance(v, str), "a string")
_OPT_STR = (lambda v: v is None or isinstance(v, str), "a string or null")
_SHAPES: dict[str, dict[str, tuple[tuple[Callable[[Any], bool], str], bool]]] = {
    "store_put": {"key": (_STR, True), "value": ((lambda v: True, "any"), True)},
    "store_delete": {"key": (_STR, True)},
    "log": {},
    "error": {"type": (_STR, False), "message": (_OPT_STR, False)},
    "final_store": {"store": ((lambda v: isinstance(v, dict), "an object"), True),
                    "changed": ((_is_str_list, "a list of strings"), True),
                    "deleted": ((_is_str_list, "a list of strings"), True)},
    "result": {"status": (_STR, True),
               "bailed": ((lambda v: isinstance(v, bool), "a boolean"), False),
               "bail_reason": (_OPT_STR, False)},
}


def check_payload(type_: str, payload: object) -> str | None:
    """Why this frame's payload is not the shape the launcher acts on, or None.
    Other frame types (custom messages) go to handlers as they are."""
    shape = _SHAPES.get(type_)
    if shape is None:
        return None
    if not isinstance(payload, dict):
        return f"payload is {type(payload).__name__}, not an object"
    for name, ((ok, want), required) in shape.items():
        if name not in payload:
            if required:
                return f"no {name!r}"
        elif not ok(payload[name]):
            return f"{name!r} must be {want}"
    return None


def kill_quietly(proc: Monitor) -> None:
    try:
        proc.send_signal(signal.SIGKILL)
    except ProcessLookupError:
        pass

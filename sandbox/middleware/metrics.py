"""Metrics: messages and bytes per type and direction, and the spawn's duration.

A launcher-side middleware; register the class (a per-run factory):
``launcher.use(Metrics)``. At the end of the run it sets
``RunResult.metrics``:

    {"messages": {"in": {type: n}, "out": {type: n}},
     "bytes":    {"in": {type: n}, "out": {type: n}},
     "spawn_duration": seconds from the spawn() call to the end of the run,
     "first_message_after": seconds to the first inbound message or None}

It counts what reaches its position in the chain (THE order rule, see
`sandbox.middleware.base`): registered first, it sees inbound messages last,
after inner middleware have unwrapped (or dropped) them, so types are the
decoded ones. Bytes are the frame's size on the wire, header included
(outbound: the encoded size of the message as it is at this position).
"""
from __future__ import annotations

import threading
import time
from typing import Any

from sandbox.ipc.frames import Message, encode
from sandbox.middleware.base import IpcMiddleware, SpawnInfo


# The child chooses type names, and Metrics may see frames an inner middleware then
# drops or rejects (the run's retained budget never charges those): registered after
# a filter it kept 150 distinct 100 KB names, 30 MB of result JSON, growing with the
# byte budget (found by an attack probe). Past these, a type is counted as OTHER.
MAX_TYPES = 100     # distinct names counted per direction
MAX_NAME = 200      # characters of a name counted by itself
OTHER = "(other)"


class Metrics(IpcMiddleware):
    name = "metrics"

    def __init__(self, info: SpawnInfo | None = None) -> None:
        self.info = info
        self.t0 = info.started if info is not None else time.monotonic()
        self.first: float | None = None
        self.messages: dict[str, dict[str, int]] = {"in": {}, "out": {}}
        self.bytes: dict[str, dict[str, int]] = {"in": {}, "out": {}}
        self._lock = threading.Lock()

    def _count(self, direction: str, msg: Message, size: int) -> None:
        with self._lock:
            m, b = self.messages[direction], self.bytes[direction]
            name = msg.type
            if name not in m and (len(m) >= MAX_TYPES or len(name) > MAX_NAME):
                name = OTHER
            m[name] = m.get(name, 0) + 1
            b[name] = b.get(name, 0) + size

    def inbound(self, msg: Message) -> Message | None:
        if self.first is None:
            self.first = time.monotonic() - self.t0
        self._count("in", msg, msg.size)
        return msg

    def outbound(self, msg: Message) -> Message | None:
        try:
            size = len(encode(msg.type, msg.payload, max_frame=1 << 62, **msg.extra))
        except Exception:
            size = 0
        self._count("out", msg, size)
        return msg

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"messages": {d: dict(v) for d, v in self.messages.items()},
                    "bytes": {d: dict(v) for d, v in self.bytes.items()},
                    "spawn_duration": time.monotonic() - self.t0,
                    "first_message_after": self.first}

    def finish(self, result: Any) -> None:
        metrics = dict(result.metrics or {})
        metrics.update(self.snapshot())
        result.metrics = metrics

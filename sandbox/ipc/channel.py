"""A blocking, thread-safe message channel over a socket: the child's end.

Used by the sandboxee runtime (any thread of an action may log or put into
the store) and by the monitor's control socket. The launcher's side uses
`FrameDecoder` directly in its event loop instead.

`outbound` / `inbound` (Message -> Message | None, e.g. a middleware
`Chain`'s methods) are applied to every frame sent after / received after
they are set; None drops the frame. Outbound runs under the send lock, so
a middleware that numbers frames (HMAC's ``seq``) sees them in wire order.
"""
from __future__ import annotations

import os
import socket
import threading
from typing import Any, Callable

from sandbox.errors import ProtocolError
from sandbox.ipc.frames import DEFAULT_MAX_FRAME, FrameDecoder, Message, encode


class Channel:
    def __init__(self, fd: int, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.sock = socket.socket(fileno=fd)
        self.max_frame = max_frame
        self._decoder = FrameDecoder(max_frame)
        self._inbox: list[Message] = []
        self._send_lock = threading.Lock()
        self.outbound: Callable[[Message], Message | None] | None = None
        self.inbound: Callable[[Message], Message | None] | None = None

    @classmethod
    def from_env(cls, var: str = "SANDBOX_IPC_FD") -> "Channel":
        try:
            fd = int(os.environ[var])
        except (KeyError, ValueError):
            raise ProtocolError(f"{var} is not set to a descriptor number") from None
        return cls(fd)

    def send(self, type_: str, payload: Any = None, **extra: Any) -> None:
        with self._send_lock:
            if self.outbound is not None:
                msg = self.outbound(Message(type_, payload, dict(extra)))
                if msg is None:
                    return
                type_, payload, extra = msg.type, msg.payload, msg.extra
            frame = encode(type_, payload, max_frame=self.max_frame, **extra)
            self.sock.sendall(frame)

    def recv(self) -> Message | None:
        """The next message, or None at end of stream."""
        while not self._inbox:
            data = self.sock.recv(65536)
            if not data:
                if self._decoder.pending:
                    raise ProtocolError("stream ended inside a frame")
                return None
            for msg in self._decoder.feed(data):
                if self.inbound is not None:
                    msg = self.inbound(msg)
                if msg is not None:
                    self._inbox.append(msg)
        return self._inbox.pop(0)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

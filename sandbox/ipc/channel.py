"""A blocking, thread-safe message channel over a socket: the child's end.

Used by the sandboxee runtime (any thread of an action may log or put into
the store) and by the monitor's control socket. The launcher's side uses
`FrameDecoder` directly in its event loop instead.
"""
from __future__ import annotations

import os
import socket
import threading
from typing import Any

from sandbox.errors import ProtocolError
from sandbox.ipc.frames import DEFAULT_MAX_FRAME, FrameDecoder, Message, encode


class Channel:
    def __init__(self, fd: int, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.sock = socket.socket(fileno=fd)
        self.max_frame = max_frame
        self._decoder = FrameDecoder(max_frame)
        self._inbox: list[Message] = []
        self._send_lock = threading.Lock()

    @classmethod
    def from_env(cls, var: str = "SANDBOX_IPC_FD") -> "Channel":
        try:
            fd = int(os.environ[var])
        except (KeyError, ValueError):
            raise ProtocolError(f"{var} is not set to a descriptor number") from None
        return cls(fd)

    def send(self, type_: str, payload: Any = None, **extra: Any) -> None:
        frame = encode(type_, payload, max_frame=self.max_frame, **extra)
        with self._send_lock:
            self.sock.sendall(frame)

    def recv(self) -> Message | None:
        """The next message, or None at end of stream."""
        while not self._inbox:
            data = self.sock.recv(65536)
            if not data:
                if self._decoder.pending:
                    raise ProtocolError("stream ended inside a frame")
                return None
            self._inbox.extend(self._decoder.feed(data))
        return self._inbox.pop(0)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

"""A blocking, thread-safe message channel over a socket: the child's end.

Used by the sandboxee runtime (any thread of an action may log or put into
the store) and by the monitor's control socket. The launcher's side uses
`FrameDecoder` directly in its event loop instead.

`outbound` / `inbound` (Message -> Message | None, e.g. a middleware
`Chain`'s methods) are applied to every frame sent after / received after
they are set; None drops the frame. Outbound runs under the send lock, so
a middleware that numbers frames (HMAC's ``seq``) sees them in wire order.

With ``coalesce=True`` (the sandboxee's IPC channel), `send` only appends
the encoded frame to a buffer and a writer thread writes whatever has
accumulated with one `sendall`: an idle channel still sends each message at
once, while a burst (an action logging in a loop) becomes a few large writes
instead of one system call and one wake-up of the launcher per message.
Order is kept (one buffer). `flush()` waits until everything queued is
written; `close()` flushes first. A write error is raised by the next
`send` or `flush`.

The writer thread starts only with the `DIRECT_SENDS`+1st message: until then
`send` writes the frame itself, under the same lock. Most actions send a few
messages (a result, the final store), and a thread costs a forked sandboxee
its stack, a malloc arena and the pages of the threading machinery it
touches, copied from the warm template (issue 14's memory per sandbox).
"""
from __future__ import annotations

import os
import socket
import threading
from typing import Any, Callable

from sandbox.errors import ProtocolError
from sandbox.ipc.frames import DEFAULT_MAX_FRAME, FrameDecoder, Message, encode


COALESCE_LIMIT = 1 << 20  # bytes buffered before a sender waits for the writer
DIRECT_SENDS = 32         # messages a coalescing channel writes itself before its writer starts


class Channel:
    def __init__(self, fd: int, *, max_frame: int = DEFAULT_MAX_FRAME,
                 coalesce: bool = False) -> None:
        self.sock = socket.socket(fileno=fd)
        self.max_frame = max_frame
        self._decoder = FrameDecoder(max_frame)
        self._inbox: list[Message] = []
        self._send_lock = threading.Lock()
        self.outbound: Callable[[Message], Message | None] | None = None
        self.inbound: Callable[[Message], Message | None] | None = None
        self._coalesce = coalesce
        if coalesce:
            self._buf = bytearray()
            self._cond = threading.Condition(self._send_lock)
            self._writing = False
            self._closed = False
            self._error: OSError | None = None
            self._direct = DIRECT_SENDS
            self._writer: threading.Thread | None = None

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
            if not self._coalesce:
                self.sock.sendall(frame)
                return
            if self._error is not None:
                raise self._error
            if self._closed:
                raise ProtocolError("channel is closed")
            if self._writer is None:
                if self._direct > 0:
                    self._direct -= 1
                    try:
                        self.sock.sendall(frame)   # nothing is buffered: order is kept
                    except OSError as exc:
                        self._error = exc
                        raise
                    return
                self._writer = threading.Thread(target=self._write_loop, name="ipc-writer",
                                                daemon=True)
                self._writer.start()
            self._buf += frame
            if len(self._buf) == len(frame):
                self._cond.notify()
            while len(self._buf) > COALESCE_LIMIT and self._error is None:
                self._cond.wait()  # backpressure: the launcher is not keeping up

    def _write_loop(self) -> None:
        with self._cond:
            while True:
                while not self._buf and not self._closed:
                    self._cond.wait()
                if not self._buf:
                    return
                data, self._buf = bytes(self._buf), bytearray()
                self._writing = True
                self._cond.release()
                try:
                    self.sock.sendall(data)
                except OSError as exc:
                    self._error = exc
                finally:
                    self._cond.acquire()
                    self._writing = False
                    self._cond.notify_all()
                if self._error is not None:
                    return

    def flush(self) -> None:
        """Wait until every frame sent so far is written (no-op without coalescing)."""
        if not self._coalesce:
            return
        with self._cond:
            while (self._buf or self._writing) and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise self._error

    def recv(self) -> Message | None:
        """The next message, or None at end of stream."""
        if not self._inbox:
            self.flush()  # a request must be on the wire before we wait for its answer
        while not self._inbox:
            data = self.sock.recv(65536)
            if not data:
                if self._decoder.pending:
                    raise ProtocolError("stream ended inside a frame")
                return None
            for msg in self._decoder.feed(data):
                kept = self.inbound(msg) if self.inbound is not None else msg
                if kept is not None:
                    self._inbox.append(kept)
        return self._inbox.pop(0)

    def buffered(self) -> bool:
        """A message already read off the socket is waiting: one read can hold several
        frames, and a reader woken by the socket's readiness would not be woken for it."""
        return bool(self._inbox)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        if self._coalesce:
            try:
                self.flush()
            except OSError:
                pass
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            if self._writer is not None:
                self._writer.join()
        self.sock.close()

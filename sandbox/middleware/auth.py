"""Authenticated messages: HMAC-SHA256 per frame with a per-run random key.

``launcher.use(HmacAuth)`` (the class: one instance, one fresh 32-byte key
per run). The key reaches the child in the `start` frame, the one frame that
is never authenticated (it bootstraps the chain). Every later frame, both
directions, carries ``"seq"`` (a counter per direction) and ``"mac"``: the
hex HMAC-SHA256 over the canonical JSON of the frame without ``mac`` (keys
sorted, no spaces, UTF-8) together with the direction (``c2p``/``p2c``, so a
frame cannot be reflected back).

Launcher side, on a frame from the child:
- no ``mac``: a protocol violation (`ProtocolError`): the child does not
  speak the authenticated protocol; the sandbox is killed, status "violation";
- a wrong ``mac``, or a ``seq`` not above the last accepted one (replay):
  the frame is rejected (`AuthError`), counted and reported in
  `RunResult.rejected`; the run goes on.

What this protects: the integrity and order of frames against anything that
can write to the IPC descriptor WITHOUT the key, such as a program the action
started that inherited the descriptor, or bytes from a confused writer.
What it does not: the key lives in the child's memory, so hostile code in the
child process can sign whatever it likes. It does not authenticate the child
to the launcher against itself. See docs/middleware.md.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from typing import Any

from sandbox.errors import ProtocolError
from sandbox.ipc.frames import Message
from sandbox.middleware.base import IpcMiddleware, SpawnInfo, replace_msg


class AuthError(ValueError):
    """A frame with a MAC that does not verify, or a replayed one."""


def canonical(direction: str, msg: Message) -> bytes:
    """The bytes the MAC covers. A lone surrogate (a name that is not UTF-8, as
    os.fsdecode gives it) is kept as its code point (`surrogatepass`): the wire
    carries it as a JSON escape and both ends decode the same string, so both get
    the same bytes here; strict UTF-8 raised, and an honest action logging such a
    name failed under HmacAuth (and the launcher's signed spawn_result was lost)."""
    obj = {k: v for k, v in msg.extra.items() if k != "mac"}
    obj.update({"dir": direction, "type": msg.type, "payload": msg.payload})
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8", "surrogatepass")


def mac_of(key: bytes, direction: str, msg: Message) -> str:
    return hmac.new(key, canonical(direction, msg), hashlib.sha256).hexdigest()


class _Signer:
    """One end: signs what it sends as `out_dir`, verifies what it gets as `in_dir`."""

    def __init__(self, key: bytes, out_dir: str, in_dir: str) -> None:
        self.key, self.out_dir, self.in_dir = key, out_dir, in_dir
        self.sent = 0
        self.last_seen = 0
        self.verified = 0
        self.rejected = 0
        self._lock = threading.Lock()

    def sign(self, msg: Message) -> Message:
        with self._lock:
            self.sent += 1
            seq = self.sent
        signed = replace_msg(msg, extra={**{k: v for k, v in msg.extra.items() if k != "mac"},
                                         "seq": seq})
        signed.extra["mac"] = mac_of(self.key, self.out_dir, signed)
        return signed

    def verify(self, msg: Message) -> Message:
        mac = msg.extra.get("mac")
        if mac is None:
            raise ProtocolError(f"unauthenticated {msg.type!r} frame while authentication is on")
        with self._lock:
            ok = isinstance(mac, str) and hmac.compare_digest(
                mac, mac_of(self.key, self.in_dir, msg))
            seq = msg.extra.get("seq")
            if not ok:
                self.rejected += 1
                raise AuthError(f"{msg.type!r} frame: MAC does not verify")
            if type(seq) is not int or seq <= self.last_seen:
                self.rejected += 1
                raise AuthError(f"{msg.type!r} frame: seq {seq!r} not after {self.last_seen} "
                                "(replayed or reordered)")
            self.last_seen = seq
            self.verified += 1
        return replace_msg(msg, extra={k: v for k, v in msg.extra.items()
                                       if k not in ("mac", "seq")})


class HmacAuth(IpcMiddleware):
    """Launcher side. Register the class: ``launcher.use(HmacAuth)``."""
    name = "hmac"

    def __init__(self, info: SpawnInfo | None = None, key: bytes | None = None) -> None:
        self.key = key or secrets.token_bytes(32)
        self._end = _Signer(self.key, out_dir="p2c", in_dir="c2p")

    def outbound(self, msg: Message) -> Message | None:
        return self._end.sign(msg)

    def inbound(self, msg: Message) -> Message | None:
        return self._end.verify(msg)

    def child_spec(self) -> dict[str, Any]:
        return {"factory": "sandbox.middleware.auth:child", "params": {"key": self.key.hex()}}

    def finish(self, result: Any) -> None:
        metrics = dict(result.metrics or {})
        metrics["auth"] = {"verified": self._end.verified, "rejected": self._end.rejected}
        result.metrics = metrics


class ChildHmac(IpcMiddleware):
    name = "hmac"

    def __init__(self, key: str) -> None:
        self._end = _Signer(bytes.fromhex(key), out_dir="c2p", in_dir="p2c")

    def outbound(self, msg: Message) -> Message | None:
        return self._end.sign(msg)

    def inbound(self, msg: Message) -> Message | None:
        return self._end.verify(msg)


def child(key: str) -> ChildHmac:
    """The child-side factory named in the `start` frame."""
    return ChildHmac(key)

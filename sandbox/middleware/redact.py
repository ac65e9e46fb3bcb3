"""Redaction of secrets in logs and store values, in the child, before they leave it.

``launcher.use(redaction(["password", "api_key"], values=[...]))`` installs a
child-side outbound middleware (`Redactor`) built from the `start` frame:

- a mapping key equal (case-insensitively) to a configured key has its value
  replaced by ``"[REDACTED]"``, at any depth: store values (``store_put`` of
  such a key, nested dicts, the ``final_store``), log fields, custom payloads;
- in every string (log messages, error messages and tracebacks, string
  values), ``key=value`` / ``key: value`` forms of a configured key and every
  occurrence of a configured literal secret `value` are replaced.

``spawn_request`` is left alone: it carries a sub-workflow to the launcher,
which must run it unchanged. ``start``/``result`` carry no user data.

What it protects against: an honest action that logs or stores a secret by
accident. It does NOT stop a hostile child: the child runs this code itself
and can write frames to its descriptor directly. See docs/middleware.md.
"""
from __future__ import annotations

import re
from typing import Any, Iterable

from sandbox.ipc.frames import Message
from sandbox.middleware.base import FunctionMiddleware, IpcMiddleware, replace_msg

PLACEHOLDER = "[REDACTED]"
_UNTOUCHED = frozenset({"spawn_request", "start", "result"})


class Redactor(IpcMiddleware):
    name = "redaction"

    def __init__(self, keys: Iterable[str] = (), values: Iterable[str] = (),
                 placeholder: str = PLACEHOLDER) -> None:
        self.keys = frozenset(k.lower() for k in keys)
        self.values = sorted({v for v in values if isinstance(v, str) and v}, key=len,
                             reverse=True)
        self.placeholder = placeholder
        self._kv = None
        if self.keys:
            names = "|".join(re.escape(k) for k in sorted(self.keys, key=len, reverse=True))
            self._kv = re.compile(rf"(?i)\b({names})(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&]+)")

    def text(self, s: str) -> str:
        for v in self.values:
            s = s.replace(v, self.placeholder)
        if self._kv is not None:
            s = self._kv.sub(lambda m: m.group(1) + m.group(2) + self.placeholder, s)
        return s

    def value(self, v: Any) -> Any:
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if isinstance(v, dict):
            return {k: (self.placeholder if k.lower() in self.keys else self.value(x))
                    for k, x in v.items()}
        return v

    def outbound(self, msg: Message) -> Message | None:
        if msg.type in _UNTOUCHED:
            return msg
        p = msg.payload
        if msg.type == "store_put" and isinstance(p, dict) and isinstance(p.get("key"), str):
            secret = p["key"].lower() in self.keys
            return replace_msg(msg, payload={**p, "value": self.placeholder if secret
                                             else self.value(p.get("value"))})
        return replace_msg(msg, payload=self.value(p))


def child(keys: Iterable[str] = (), values: Iterable[str] = (),
          placeholder: str = PLACEHOLDER) -> Redactor:
    """The child-side factory named in the `start` frame."""
    return Redactor(keys, values, placeholder)


def redaction(keys: Iterable[str], *, values: Iterable[str] = (),
              placeholder: str = PLACEHOLDER) -> FunctionMiddleware:
    """Register with ``launcher.use(...)``: redacts in the child, identity in the launcher."""
    return FunctionMiddleware(name="redaction", child={
        "factory": "sandbox.middleware.redact:child",
        "params": {"keys": list(keys), "values": list(values), "placeholder": placeholder}})

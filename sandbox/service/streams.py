"""What a run emits while it runs, turned into events: output chunks with secrets
masked (even when a secret spans two chunks), IPC messages and log records.

A secret is masked before anything leaves this module: the last (longest
secret - 1) characters of a chunk are held back until the next chunk (or the
end), so a secret cut in two is masked exactly as if the output came whole.
"""
from __future__ import annotations

import codecs
import json
import re
from typing import Any, Callable, Iterable, Sequence, Union

MAX_MESSAGE_CHARS = 64 * 1024
MAX_RUN_MESSAGES = 10_000          # message and log events one run may store
MAX_RUN_MESSAGE_CHARS = 8 << 20    # and their characters, all together
SECRET_MASK = "[secret]"

Publish = Callable[[str, dict[str, Any]], None]


class Secrets:
    """One run's secret values, ready to mask: one regular expression for all of
    them, their first characters factored out as a trie, so the regex engine (C)
    looks at each position once per trie level, not once per secret. Made once
    a run and dropped with it (no cache keeps the values). A Python loop over
    every secret at every character cost 30 s of the server's CPU for 1 MiB of
    stdout and 256 secrets (attack probe, 2026-12-06)."""

    def __init__(self, values: Iterable[str]) -> None:
        distinct = sorted({v for v in values if v})
        self.longest = max((len(v) for v in distinct), default=0)
        self.pattern = re.compile(_alternation(distinct, 0)) if distinct else None

    def __bool__(self) -> bool:
        return self.pattern is not None


SecretsLike = Union[Secrets, Sequence[str]]


def ready(secrets: SecretsLike) -> Secrets:
    return secrets if isinstance(secrets, Secrets) else Secrets(secrets)


TRIE_DEPTH = 6     # characters of the secrets' prefixes factored out (nesting of the pattern)


def _alternation(secrets: list[str], depth: int) -> str:
    """`secrets` (distinct, "" for a secret that ends here) as alternatives that
    match the longest one first."""
    if depth >= TRIE_DEPTH or len(secrets) <= 2:
        return "|".join(re.escape(s) for s in sorted(secrets, key=len, reverse=True))
    groups: dict[str, list[str]] = {}
    for s in secrets:
        if s:
            groups.setdefault(s[0], []).append(s[1:])
    parts = [re.escape(c) + ("" if rest == [""] else f"(?:{_alternation(rest, depth + 1)})")
             for c, rest in groups.items()]
    if "" in secrets:
        parts.append("")     # last: a longer secret through this prefix wins
    return "|".join(parts)


def mask_text(text: str, secrets: SecretsLike, upto: int | None = None) -> tuple[str, int]:
    """(text[:end] with every secret replaced, end): left to right, the longest
    secret at each position. `upto`: stop at that index, but finish a secret that
    starts before it (end >= upto); the rest of the text is left for a later
    call, which then masks exactly as one call on the whole text would (a
    streamed secret split across chunks is still found)."""
    stop = len(text) if upto is None else upto
    pattern = ready(secrets).pattern
    if pattern is None:
        return text[:stop], stop
    out: list[str] = []
    plain = 0
    for m in pattern.finditer(text):
        if m.start() >= stop:
            break
        out.append(text[plain:m.start()])
        out.append(SECRET_MASK)
        plain = m.end()
    end = max(stop, plain)
    out.append(text[plain:end])
    return "".join(out), end


def mask(value: Any, secrets: SecretsLike) -> Any:
    """`value` with every secret string replaced, recursively (JSON shapes)."""
    ready_ = ready(secrets)
    if not ready_:
        return value
    return _mask(value, ready_)


def _mask(value: Any, secrets: Secrets) -> Any:
    if isinstance(value, str):
        return mask_text(value, secrets)[0]
    if isinstance(value, dict):
        return {_mask(k, secrets): _mask(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, secrets) for v in value]
    return value


class OutputStream:
    """stdout/stderr chunks (bytes) -> `publish(name, {"text": ...})`, secrets masked."""

    def __init__(self, publish: Publish, secrets: SecretsLike) -> None:
        self.publish = publish
        self.secrets = ready(secrets)
        self._longest = self.secrets.longest
        self._decoders = {n: codecs.getincrementaldecoder("utf-8")("replace")
                          for n in ("stdout", "stderr")}
        self._held = {"stdout": "", "stderr": ""}

    def feed(self, name: str, chunk: bytes) -> None:
        text = self._held[name] + self._decoders[name].decode(chunk)
        if not self.secrets:
            out, self._held[name] = text, ""
        else:
            # every position before `upto` has a full secret's length of lookahead
            upto = max(0, len(text) - (self._longest - 1))
            out, end = mask_text(text, self.secrets, upto)
            self._held[name] = text[end:]
        if out:
            self.publish(name, {"text": out})

    def close(self) -> None:
        for name, dec in self._decoders.items():
            text = self._held[name] + dec.decode(b"", final=True)
            self._held[name] = ""
            if text:
                self.publish(name, {"text": mask(text, self.secrets)})


# The protocol's own frames (docs/ipc-protocol.md): the store and the workflow's
# outcome reach the client in the result, nested spawns as their own runs.
PROTOCOL_TYPES = frozenset({"start", "store_put", "store_delete", "final_store", "result",
                            "spawn_request", "spawn_result"})


def message_event(msg_type: str, payload: Any,
                  secrets: SecretsLike) -> tuple[str, dict[str, Any]] | None:
    """An IPC message as an event: ("log", {record}) for log records, None for the
    protocol's own frames, else ("message", {type, payload}); a payload over 64 KiB
    is replaced by its size."""
    if msg_type in PROTOCOL_TYPES:
        return None
    payload = mask(payload, secrets)
    try:
        size = len(json.dumps(payload, default=str))
    except (TypeError, ValueError):
        payload, size = repr(payload)[:200], 0
    if size > MAX_MESSAGE_CHARS:
        payload = {"truncated": True, "chars": size}
    if msg_type == "log":
        return "log", {"record": payload}
    return "message", {"type": mask(str(msg_type)[:128], secrets), "payload": payload}


class MessageBudget:
    """What one run's IPC messages and log records may store as events: at most
    `MAX_RUN_MESSAGES` of them and `MAX_RUN_MESSAGE_CHARS` characters, then one
    `truncated` event and nothing more. Every event is kept in the service's
    database and replayed to each reader, and a run may send 100,000 frames: one
    strict run stored 392 MiB this way (its whole output allowance is 128 MiB), and
    its readers made the server hold 0.5 GiB each. Output chunks are bounded by
    the launcher's capture (16 MiB a stream)."""

    def __init__(self, publish: Publish) -> None:
        self.publish = publish
        self.count = self.chars = 0
        self.full = False

    def __call__(self, type_: str, data: dict[str, Any]) -> None:
        if self.full:
            return
        size = len(json.dumps(data, default=str))
        if self.count + 1 > MAX_RUN_MESSAGES or self.chars + size > MAX_RUN_MESSAGE_CHARS:
            self.full = True
            self.publish("truncated", {"what": "message and log events",
                                       "kept": self.count, "chars": self.chars,
                                       "limit": {"events": MAX_RUN_MESSAGES,
                                                 "chars": MAX_RUN_MESSAGE_CHARS}})
            return
        self.count += 1
        self.chars += size
        self.publish(type_, data)

"""Server-Sent Events, parsed as the WHATWG spec says, for `Client.events`.

A run's events stream (`GET /v1/runs/{id}/events`) is resumable: each event has
an `id`, and a reconnect sends the last one seen as `Last-Event-ID`, so the
server replays only what came after. The parser is fed lines and yields one
`Event` per blank line; `data` is the joined data lines, parsed as JSON when it
is JSON (the service sends JSON), else the text. Bytes from the run reach us
only inside that JSON, so a CR or LF the program printed cannot start a forged
event: JSON escapes them (tests/service/test_hostile.py checks the wire bytes).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    """One event (docs/service.md): `event` is its type (queued, started, stdout,
    stderr, message, log, denied, exit), `data` its JSON payload, `id` its
    sequence number in the run (the Last-Event-ID to resume after it)."""
    event: str
    data: Any
    id: str | None = None

    @property
    def is_final(self) -> bool:
        """A run's last event (`exit`): after it the server ends a run's stream.
        In GET /v1/events it is one run's end among many."""
        return self.event in FINAL_EVENTS


FINAL_EVENTS = frozenset({"exit"})


class Parser:
    """Feed it decoded lines (without their line ending); it yields events."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self.last_id: str | None = None   # survives across events, as the spec's buffer

    def feed(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None                     # a comment (keep-alive ping)
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        # "retry" and unknown fields are ignored
        return None

    def _dispatch(self) -> Event | None:
        if self._id is not None:
            self.last_id = self._id
        if not self._data:
            self._event, self._id = "", None
            return None
        text = "\n".join(self._data)
        try:
            data: Any = json.loads(text)
        except ValueError:
            data = text
        ev = Event(event=self._event or "message", data=data, id=self._id or self.last_id)
        self._data, self._event, self._id = [], "", None
        return ev


def parse(lines: Iterable[str]) -> Iterator[Event]:
    p = Parser()
    for line in lines:
        ev = p.feed(line.rstrip("\r"))
        if ev is not None:
            yield ev

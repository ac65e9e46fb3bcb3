"""A minimal Server-Sent Events reader for the service tests (httpx streaming)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator

import httpx


@dataclass
class SSE:
    id: str
    event: str
    data: Any


def read_events(client: httpx.Client, path: str, *, headers: dict[str, str] | None = None,
                params: dict[str, Any] | None = None, until: str | None = "exit",
                limit: int = 100000) -> Iterator[SSE]:
    with client.stream("GET", path, headers=headers, params=params, timeout=120) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        ev: dict[str, str] = {}
        data: list[str] = []
        n = 0
        for line in r.iter_lines():
            if line == "":
                if data:
                    out = SSE(ev.get("id", ""), ev.get("event", "message"),
                              json.loads("\n".join(data)))
                    yield out
                    n += 1
                    if (until is not None and out.event == until) or n >= limit:
                        return
                ev, data = {}, []
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "data":
                data.append(value)
            else:
                ev[key] = value

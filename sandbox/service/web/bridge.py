"""The page reads and acts only through the service's own /v1 API, called
in-process with the logged-in user's bearer token.

Why: the API is where authentication, tenancy (a token sees only its own runs),
ceilings, quotas and hostile-input rules live. A page that read the store
directly would be a second implementation of those rules, and the first place
they would drift. Going through /v1 means the page can never show or do more
than the same token could with curl.

Calls are plain ASGI calls into the same application (no socket, no TLS, no
second port): `call` buffers a response (httpx's ASGITransport), `stream`
yields a streaming one (Server-Sent Events) chunk by chunk, which
ASGITransport cannot (it collects the whole body first).
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from sandbox.client.errors import detail_text   # one reading of FastAPI's detail

API = "/v1"


class ApiError(Exception):
    """A /v1 call answered an error; `status` and the API's `detail` are kept
    so the page can show the API's own one-line reason."""

    def __init__(self, status: int, detail: Any):
        self.status = status
        self.detail = detail
        super().__init__(f"{status}: {detail_text(detail)}")


@dataclass
class Api:
    """The API as one token sees it."""
    app: Any
    token: str

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"authorization": f"Bearer {self.token}", "accept": "application/json"}
        headers.update(extra or {})
        return headers

    async def call(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                   json_body: Any = None, raw: bool = False, versioned: bool = True,
                   headers: dict[str, str] | None = None) -> Any:
        """One /v1 call (`versioned=False`: a path outside /v1, e.g. /healthz);
        returns the decoded JSON (or the httpx.Response when `raw`), raising
        ApiError for a status of 400 or more."""
        transport = httpx.ASGITransport(app=self.app, client=("127.0.0.1", 0))
        async with httpx.AsyncClient(transport=transport, base_url="http://ui.internal") as client:
            clean = {k: v for k, v in (params or {}).items() if v not in (None, "")}
            resp = await client.request(method, (API if versioned else "") + path, params=clean, json=json_body,
                                        headers=self._headers(headers))
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise ApiError(resp.status_code, detail)
        if raw:
            return resp
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    async def get(self, path: str, **params: Any) -> Any:
        return await self.call("GET", path, params=params)

    async def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return await self.call("POST", path, params=params, json_body=body)

    async def stream(self, path: str, params: dict[str, Any] | None = None,
                     headers: dict[str, str] | None = None) -> "Stream":
        return await Stream.open(self.app, API + path, params or {}, self._headers(headers))


class Stream:
    """A streaming ASGI GET into the application: status and headers first,
    then the body as it is sent. Closing it tells the endpoint the client left
    (http.disconnect), so an SSE generator upstream ends too."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        # two messages: the API's next send waits for the page's client to read, so
        # the API holds its answer's slot (and the page no copy) while it does not;
        # a download holds at most two of its chunks here (64 held 16 MiB per download
        # of 256 KiB chunks, for a reader slower than the disk)
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=2)
        self._gone = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, app: Any, path: str, params: dict[str, Any],
                   headers: dict[str, str]) -> "Stream":
        self = cls()
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
            "root_path": "", "query_string": urlencode(
                {k: v for k, v in params.items() if v not in (None, "")}).encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 0), "server": ("ui.internal", 80), "state": {},
        }
        sent_request = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await self._gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if self._gone.is_set():
                raise OSError("the page's client went away")
            await self._queue.put(message)

        async def run() -> None:
            try:
                await app(scope, receive, send)
            finally:
                await self._queue.put({"type": "ui.done"})

        self._task = asyncio.create_task(run())
        start = await self._queue.get()
        if start["type"] == "ui.done":
            raise ApiError(500, "the API sent no response")
        self.status = start["status"]
        self.headers = {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}
        return self

    async def body(self) -> AsyncIterator[bytes]:
        try:
            while True:
                message = await self._queue.get()
                if message["type"] != "http.response.body":
                    return
                if message.get("body"):
                    yield message["body"]
                if not message.get("more_body"):
                    return
        finally:
            await self.close()

    async def close(self) -> None:
        self._gone.set()
        if self._task and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

"""`AsyncClient`: the asyncio twin of `Client` (sandbox.client.sync), on
httpx.AsyncClient. Same requests, same answers, same typed errors (both build
on sandbox.client.api); only the waiting differs.

    async with AsyncClient(url, token) as c:
        run = await c.run(["echo", "hi"])
        async for ev in c.events(run.id):
            ...
"""
from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from sandbox.client import api, errors, files, models
from sandbox.client.files import MAX_BYTES
from sandbox.client.sse import Event, Parser
from sandbox.client.sync import RECONNECTS, STREAM_TIMEOUT, TIMEOUT, WAIT_STEP


class AsyncClient:
    def __init__(self, url: str | None = None, token: str | None = None, *,
                 timeout: httpx.Timeout | float = TIMEOUT,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url, self.token = api.settings(url, token)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout,
                                       transport=transport, follow_redirects=False)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, req: api.Request) -> httpx.Response:
        try:
            r = await self._http.request(req.method, req.path, params=req.params or None,
                                         json=req.json, headers=req.headers or None)
        except httpx.TransportError as exc:
            raise errors.ConnectionFailed(f"{self.url}: {exc or type(exc).__name__}") from exc
        api.check(r.status_code, r.content, r.headers)
        return r

    async def _json(self, method: str, path: str, **params: Any) -> Any:
        req = api.Request(method, path, params={k: v for k, v in params.items() if v is not None})
        return (await self._send(req)).json()

    async def health(self) -> dict[str, Any]:
        return dict(await self._json("GET", "/healthz"))

    async def submit(self, argv: list[str] | None = None, **kw: Any) -> models.RunView:
        """See Client.submit."""
        return models.run((await self._send(api.submit_request(argv=argv, **kw))).json())

    async def run(self, argv: list[str] | None = None, *, deadline: float | None = None,
                  **kw: Any) -> models.RunView:
        kw.setdefault("wait", 30)
        run = await self.submit(argv, **kw)
        return await self.wait(run.id, deadline=deadline, first=run)

    async def wait(self, run_id: str, *, deadline: float | None = None,
                   first: models.RunView | None = None) -> models.RunView:
        run = first if first is not None else await self.get(run_id)
        end = None if deadline is None else time.monotonic() + deadline
        while not models.is_final(run):
            left = WAIT_STEP if end is None else min(WAIT_STEP, end - time.monotonic())
            if left <= 0:
                raise TimeoutError(f"run {run_id} still {run.status} after {deadline}s")
            run = await self.get_wait(run_id, max(1, int(left)))
        return run

    async def get(self, run_id: str) -> models.RunView:
        return models.run(await self._json("GET", api.run_path(run_id)))

    async def get_wait(self, run_id: str, seconds: float) -> models.RunView:
        return models.run(await self._json("GET", api.run_path(run_id), wait=seconds))

    async def list(self, *, status: str | None = None, limit: int | None = None,
                   cursor: str | None = None, token: str | None = None,
                   since: float | None = None, until: float | None = None) -> models.RunList:
        return models.page(await self._json("GET", f"{api.PREFIX}/runs", status=status,
                                            limit=limit, cursor=cursor, token=token,
                                            since=since, until=until))

    async def cancel(self, run_id: str) -> models.RunView:
        return models.run(await self._json("POST", api.run_path(run_id, "cancel")))

    async def audit(self, run_id: str, *, denied: bool = False) -> Any:
        return await self._json("GET", api.run_path(run_id, "audit"),
                                denied=1 if denied else None)

    async def files(self, run_id: str) -> builtins.list[models.FileEntry]:
        return models.file_list(await self._json("GET", api.run_path(run_id, "files")))

    async def download(self, run_id: str, name: str) -> bytes:
        """One output file's bytes (Client.download writes into a directory)."""
        return (await self._send(api.Request("GET", api.file_path(run_id, name)))).content

    async def download_all(self, run_id: str, dest_dir: str, *,
                           max_bytes: int = MAX_BYTES) -> builtins.list[str]:
        """Every regular output file into dest_dir, as Client.download_all does."""
        fetch, links = files.plan(await self.files(run_id), max_bytes)
        out = []
        for e in fetch:
            try:
                async with self._http.stream("GET", api.file_path(run_id, e.name)) as r:
                    if r.status_code >= 400:
                        api.check(r.status_code, await r.aread(), r.headers)
                    with files.Sink(dest_dir, e.name) as sink:
                        async for chunk in r.aiter_bytes():
                            sink.write(chunk)
            except httpx.TransportError as exc:
                raise errors.ConnectionFailed(f"{self.url}: {exc}") from exc
            out.append(sink.path)
        return out + [files.link_under(dest_dir, e.name, models.local_name(e.target, ""))
                      for e in links]

    async def events(self, run_id: str, last_event_id: str | None = None, *,
                     reconnect: bool = True) -> AsyncIterator[Event]:
        async def finished() -> bool:
            return models.is_final(await self.get(run_id))
        async for ev in self._stream(api.run_path(run_id, "events"), last_event_id, reconnect,
                                     finished, True):
            yield ev

    async def all_events(self, last_event_id: str | None = None) -> AsyncIterator[Event]:
        async def never() -> bool:
            return False
        async for ev in self._stream(f"{api.PREFIX}/events", last_event_id, True, never, False):
            yield ev

    async def _stream(self, path: str, last: str | None, reconnect: bool,
                      finished: Callable[[], Awaitable[bool]],
                      stop_at_exit: bool) -> AsyncIterator[Event]:
        failures = 0
        while True:
            headers = {"Last-Event-ID": last} if last else {}
            try:
                async with self._http.stream("GET", path, headers=headers,
                                             timeout=STREAM_TIMEOUT) as r:
                    if r.status_code >= 400:
                        api.check(r.status_code, await r.aread(), r.headers)
                    parser = Parser()
                    async for line in r.aiter_lines():
                        ev = parser.feed(line)
                        if ev is None:
                            continue
                        failures = 0
                        if ev.id:
                            last = ev.id
                        yield ev
                        if stop_at_exit and ev.is_final:
                            return
            except httpx.TransportError as exc:
                if not reconnect or failures >= RECONNECTS:
                    raise errors.ConnectionFailed(f"{self.url}: events: {exc}") from exc
            else:
                if not reconnect or await finished():
                    return
            failures += 1
            await asyncio.sleep(min(0.1 * 2 ** failures, 2.0))

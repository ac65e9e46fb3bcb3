"""`Client`: the blocking client of `sandbox serve` (issue 16 item 5), on httpx.

    from sandbox.client import Client
    with Client("http://127.0.0.1:8700", token) as c:      # or SANDBOX_SERVER/SANDBOX_TOKEN
        result = c.run(["python3", "-c", "print(1)"], policy="strict")
        print(result["status"], result["stdout"])
        for ev in c.events(result["id"]):                    # replayed for a finished run
            print(ev.event, ev.data)

Every failure is a typed `ClientError` carrying the server's reason
(sandbox.client.errors). Nothing here trusts the run: file names are checked
before anything is written (sandbox.client.files), events are JSON.
"""
from __future__ import annotations

import builtins
import time
from collections.abc import Iterator
from typing import Any

import httpx

from sandbox.client import api, errors, files, models
from sandbox.client.files import MAX_BYTES
from sandbox.client.sse import Event, Parser

TIMEOUT = httpx.Timeout(30.0, connect=10.0)
STREAM_TIMEOUT = httpx.Timeout(30.0, connect=10.0, read=None)
RECONNECTS = 20
WAIT_STEP = 30.0     # seconds per ?wait= request (the server allows 300)


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, *,
                 timeout: httpx.Timeout | float = TIMEOUT,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url, self.token = api.settings(url, token)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                  transport=transport, follow_redirects=False)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- transport ------------------------------------------------------------
    def _send(self, req: api.Request) -> httpx.Response:
        try:
            r = self._http.request(req.method, req.path, params=req.params or None,
                                   json=req.json, headers=req.headers or None)
        except httpx.TransportError as exc:
            raise errors.ConnectionFailed(f"{self.url}: {exc or type(exc).__name__}") from exc
        api.check(r.status_code, r.content, r.headers)
        return r

    def _json(self, method: str, path: str, **params: Any) -> Any:
        return self._send(api.Request(method, path, params={k: v for k, v in params.items()
                                                            if v is not None})).json()

    def health(self) -> dict[str, Any]:
        """GET /healthz (no token needed): status, version, queued, running."""
        return dict(self._json("GET", "/healthz"))

    # -- runs -----------------------------------------------------------------
    def submit(self, argv: list[str] | None = None, **kw: Any) -> models.RunView:
        """POST /v1/runs: queue a program (argv) or a workflow (workflow=...); returns
        at once (202) unless wait=SECONDS, with the run's id, status and links.
        Keywords: workflow, policy (a name, or a dict: an inline policy), stdin
        (str or bytes), env, secret_env, files ({name: bytes} or {name: (bytes,
        "rx")}), store, timeout, retries, labels, idempotency_key, wait."""
        return models.run(self._send(api.submit_request(argv=argv, **kw)).json())

    def run(self, argv: list[str] | None = None, *,
            deadline: float | None = None, **kw: Any) -> models.RunView:
        """Submit and wait for the end; the finished run (its RunResult included)."""
        kw.setdefault("wait", 30)
        run = self.submit(argv, **kw)
        return self.wait(run.id, deadline=deadline, first=run)

    def wait(self, run_id: str, *, deadline: float | None = None,
             first: models.RunView | None = None) -> models.RunView:
        """GET /v1/runs/{id}?wait= until the run has a final status (`deadline`: give
        up after that many seconds with TimeoutError)."""
        run = first if first is not None else self.get(run_id)
        end = None if deadline is None else time.monotonic() + deadline
        while not models.is_final(run):
            left = WAIT_STEP if end is None else min(WAIT_STEP, end - time.monotonic())
            if left <= 0:
                raise TimeoutError(f"run {run_id} still {run.status} after {deadline}s")
            run = self.get_wait(run_id, max(1, int(left)))
        return run

    def get(self, run_id: str) -> models.RunView:
        return models.run(self._json("GET", api.run_path(run_id)))

    def get_wait(self, run_id: str, seconds: float) -> models.RunView:
        """GET /v1/runs/{id}?wait=SECONDS: the run once it ended, or as it is then."""
        return models.run(self._json("GET", api.run_path(run_id), wait=seconds))

    def list(self, *, status: str | None = None, limit: int | None = None,
             cursor: str | None = None, token: str | None = None, since: float | None = None,
             until: float | None = None) -> models.RunList:
        """One page of GET /v1/runs, newest first; `page.next_cursor` for the next
        (`token`: a token's name, admin only; since/until: epoch seconds)."""
        return models.page(self._json("GET", f"{api.PREFIX}/runs", status=status, limit=limit,
                                      cursor=cursor, token=token, since=since, until=until))

    def iter_runs(self, *, status: str | None = None, page_size: int = 100) -> Iterator[models.RunView]:
        cursor = None
        while True:
            page = self.list(status=status, limit=page_size, cursor=cursor)
            yield from page.items
            if not page.next_cursor or not page.items:
                return
            cursor = page.next_cursor

    def cancel(self, run_id: str) -> models.RunView:
        return models.run(self._json("POST", api.run_path(run_id, "cancel")))

    def audit(self, run_id: str, *, denied: bool = False) -> Any:
        return self._json("GET", api.run_path(run_id, "audit"), denied=1 if denied else None)

    def suggest(self, run_id: str) -> Any:
        return self._json("GET", api.run_path(run_id, "policy", "suggest"))

    # -- files ----------------------------------------------------------------
    def files(self, run_id: str) -> builtins.list[models.FileEntry]:
        return models.file_list(self._json("GET", api.run_path(run_id, "files")))

    def download(self, run_id: str, name: str, dest_dir: str | None = None) -> bytes | str:
        """One output file: its bytes, or (dest_dir given) the path it was written to,
        never outside dest_dir, zero blocks left as holes (sandbox.client.files)."""
        path = api.file_path(run_id, name)
        if dest_dir is None:
            return self._send(api.Request("GET", path)).content
        files.parts(name)                   # refuse before asking
        try:
            with self._http.stream("GET", path) as r:
                if r.status_code >= 400:
                    api.check(r.status_code, r.read(), r.headers)
                return files.write_under(dest_dir, name, r.iter_bytes())
        except httpx.TransportError as exc:
            raise errors.ConnectionFailed(f"{self.url}: {exc}") from exc

    def download_all(self, run_id: str, dest_dir: str, *,
                     max_bytes: int = MAX_BYTES) -> builtins.list[str]:
        """Every regular output file into dest_dir, a second name of a file made a hard
        link again; a name that would leave dest_dir (UnsafePath) or more than
        `max_bytes` to fetch (TooLarge) raise before anything is written."""
        fetch, links = files.plan(self.files(run_id), max_bytes)
        out = [str(self.download(run_id, e.name, dest_dir)) for e in fetch]
        return out + [files.link_under(dest_dir, e.name, models.local_name(e.target, ""))
                      for e in links]

    # -- events ---------------------------------------------------------------
    def events(self, run_id: str, last_event_id: str | None = None, *,
               reconnect: bool = True) -> Iterator[Event]:
        """The run's Server-Sent Events from the start (or after last_event_id) to
        its final event; a dropped connection is resumed with Last-Event-ID."""
        yield from self._stream(api.run_path(run_id, "events"), last_event_id, reconnect,
                                lambda: models.is_final(self.get(run_id)), True)

    def all_events(self, last_event_id: str | None = None) -> Iterator[Event]:
        """GET /v1/events: status changes of every run this token sees (endless)."""
        yield from self._stream(f"{api.PREFIX}/events", last_event_id, True, lambda: False, False)

    def _stream(self, path: str, last: str | None, reconnect: bool,
                finished: Any, stop_at_exit: bool) -> Iterator[Event]:
        failures = 0
        while True:
            headers = {"Last-Event-ID": last} if last else {}
            try:
                with self._http.stream("GET", path, headers=headers,
                                       timeout=STREAM_TIMEOUT) as r:
                    if r.status_code >= 400:
                        api.check(r.status_code, r.read(), r.headers)
                    parser = Parser()
                    for line in r.iter_lines():
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
                if not reconnect or finished():
                    return
            failures += 1
            time.sleep(min(0.1 * 2 ** failures, 2.0))
